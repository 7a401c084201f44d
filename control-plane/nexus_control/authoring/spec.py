"""The spec kinds policy authors write, one YAML kind per concern.

Every document starts with ``apiVersion: policy.nexus.ai/v1`` and a ``kind``.
Models are strict: an unknown key, a wrong type or a value out of range is an
error, never silently ignored. Field names are camelCase in YAML.
Cross-references between documents (a binding naming an unknown role, say)
are checked in :mod:`nexus_control.crossref`, not here.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from nexus_contract.wire import GATEWAY_ROUTES
from nexus_control.authoring.quality import Quality

__all__ = [
    "API_VERSION",
    "DEFAULT_APPROVAL_TTL_S",
    "LIMITED_ROUTES",
    "MAX_CAPABILITIES",
    "MAX_FALLBACKS",
    "MAX_OUTPUT_TOKENS",
    "MAX_RATE",
    "MAX_USD_PER_MTOK",
    "MAX_WINDOW_DAYS",
    "RATE_UNIT_SECONDS",
    "ROUTE_PERMISSIONS",
    "SPEC_KINDS",
    "AnySpec",
    "ApiKey",
    "ApprovalTtlSpec",
    "Binding",
    "Budget",
    "BundleSpec",
    "Capability",
    "CircuitBreakers",
    "CustomWindow",
    "DataClass",
    "Endpoint",
    "Flag",
    "Identifier",
    "IdentitySpec",
    "Issuer",
    "LatencyObjective",
    "Model",
    "ModelsSpec",
    "Objectives",
    "OnAnomaly",
    "OutlierDetection",
    "Override",
    "Permission",
    "Plan",
    "PlanName",
    "Price",
    "Prompt",
    "PromptVersion",
    "PromptsSpec",
    "Provider",
    "ProvidersSpec",
    "Quality",
    "RateLimit",
    "RateLimitsSpec",
    "RbacSpec",
    "RecordSigner",
    "Region",
    "RegionPriority",
    "RegionsSpec",
    "RetentionRule",
    "RetentionSpec",
    "Risk",
    "RiskLevel",
    "Role",
    "RolloutsSpec",
    "SLOsSpec",
    "Sha256Hex",
    "Tenant",
    "TenantRetention",
    "TenantsSpec",
    "Text",
    "Tool",
    "ToolsSpec",
    "Variant",
    "WindowName",
    "known_zone",
]

API_VERSION = "policy.nexus.ai/v1"
MAX_USD_PER_MTOK = 10_000.0
"""A model price above this (USD per million tokens) is a typo, not a price."""
MAX_OUTPUT_TOKENS = 10_000_000
MAX_FALLBACKS = 8
MAX_FAILOVER_REGIONS = 16
MAX_ENDPOINTS = 64
DEFAULT_CONSECUTIVE_5XX = 5
DEFAULT_OUTLIER_INTERVAL_MS = 10_000
DEFAULT_BASE_EJECTION_MS = 30_000
DEFAULT_MAX_EJECTION_PERCENT = 100
"""Every endpoint of a region may be ejected, so traffic moves on to the next priority."""
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_REQUESTS = 1024
DEFAULT_MAX_RETRIES = 3


Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$", strict=True)
]
"""Lower-case ids: letters, digits, '.', '_', '-'; used as object keys in bundle data."""

Permission = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+:[a-z0-9*._-]+$", strict=True)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", strict=True)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strict=True)]

ROUTE_PERMISSIONS: frozenset[str] = frozenset(
    {"chat:completions", "chats:read", "chats:delete", "subjects:erase"}
)
"""Permissions the gateway's fixed routes require (see rego/README.md)."""


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=False,
    )


class Plan(StrEnum):
    FREE = "free"
    TEAM = "team"
    ENTERPRISE = "enterprise"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RISK_RANK[self]


_RISK_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}

# YAML gives strings; enums are the one place values are converted.
PlanName = Annotated[Plan, Field(strict=False)]
Risk = Annotated[RiskLevel, Field(strict=False)]


# --- Bundle ------------------------------------------------------------------


class BundleSpec(_Strict):
    """``bundle.yaml``: names the bundle and the Rego library it carries."""

    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Bundle"]
    name: Identifier
    description: Text | None = None
    policy: Annotated[str, StringConstraints(min_length=1, strict=True)] = "../../rego"
    """Directory of the Rego library, relative to bundle.yaml."""


# --- Regions -----------------------------------------------------------------


class Region(_Strict):
    id: Identifier
    jurisdiction: Identifier


class RegionPriority(_Strict):
    """The regions a jurisdiction's traffic may be served from, most preferred first.

    An enforcer sends to providers' endpoints in its own region first, then in
    these regions in order; every one must be of ``jurisdiction``.
    """

    jurisdiction: Identifier
    regions: list[Identifier] = Field(min_length=1, max_length=MAX_FAILOVER_REGIONS)


class RegionsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Regions"]
    regions: list[Region] = Field(min_length=1)
    failover: list[RegionPriority] = Field(default_factory=list)


# --- Tenants -----------------------------------------------------------------


class OnAnomaly(_Strict):
    """What the tenant's budget does while a spend anomaly of the tenant is on hold: from
    the detector's finding until an approver releases it (``nexus-policy budgets
    release``). Set at least one."""

    lower_soft_cap_to_percent: Annotated[int, Field(ge=1, le=99)] | None = None
    """The soft cap (warnings) drops to this percent of every cap meanwhile."""
    hold_models_above_usd_per_mtok: (
        Annotated[float, Field(ge=0, le=MAX_USD_PER_MTOK, allow_inf_nan=False, strict=False)] | None
    ) = None
    """Chats on a model whose input or output price is above this (USD per million
    tokens) are refused meanwhile: a costlier model needs a person's approval first."""

    @model_validator(mode="after")
    def _one_action(self) -> OnAnomaly:
        if self.lower_soft_cap_to_percent is None and self.hold_models_above_usd_per_mtok is None:
            raise ValueError(
                "onAnomaly needs lowerSoftCapToPercent or holdModelsAboveUsdPerMtok (or both)"
            )
        return self


MAX_WINDOW_DAYS = 62
"""The longest custom budget window (`nexus_control.budgets.window.MAX_WINDOW_DAYS`)."""


class CustomWindow(_Strict):
    """A budget window of ``days`` days, repeating from ``anchor`` (the first day of one
    window), in the tenant's time zone."""

    days: Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)]
    anchor: Annotated[date, Field(strict=False)]

    @field_validator("anchor")
    @classmethod
    def _anchor_has_come(cls, anchor: date) -> date:
        # A day's slack: the tenant's zone may already be in tomorrow (UTC+14).
        latest = datetime.now(UTC).date() + timedelta(days=1)
        if anchor > latest:
            raise ValueError(
                f"anchor {anchor} is in the future: it names the first day of a window "
                "that has already begun (any past window of the series will do)"
            )
        return anchor


WindowName = Literal["month", "week", "day"]


def _window_form(value: Any) -> str:
    return "custom" if isinstance(value, dict | CustomWindow) else "named"


# One form per input shape, so a bad window gets the one error that fits what was written.
_Window = Annotated[
    Annotated[WindowName, Tag("named")] | Annotated[CustomWindow, Tag("custom")],
    Discriminator(_window_form),
]


class Budget(_Strict):
    monthly_cap_usd: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]
    """The cap per budget window (a calendar month unless ``window`` says otherwise)."""
    window: _Window = "month"
    """Which stretch of time the caps count spend over, in the tenant's ``timeZone``:
    ``month``, ``week`` (ISO, from Monday), ``day``, or ``{days: N, anchor: DATE}``."""
    soft_cap_percent: Annotated[int, Field(ge=1, le=100)] = 80
    on_hard_cap: Literal["refuse", "disable"] = "refuse"
    before_state: Literal["refuse", "allow"] = "refuse"
    """What metered routes get while an enforcer has no state bundle (spend unknown)."""
    per_model: dict[Identifier, Annotated[float, Field(gt=0, strict=False)]] = Field(
        default_factory=dict
    )
    per_feature: dict[Identifier, Annotated[float, Field(gt=0, strict=False)]] = Field(
        default_factory=dict
    )
    max_request_usd: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)] | None = None
    """The most one chat completion may cost at worst (its price times its token bound)."""
    allow_unpriced_models: bool = False
    """Serve chats on models without a price: their worst case is unknown, so only the
    after-the-fact caps hold them."""
    on_anomaly: OnAnomaly | None = None

    @model_validator(mode="after")
    def _anomaly_below_soft_cap(self) -> Budget:
        lowered = self.on_anomaly.lower_soft_cap_to_percent if self.on_anomaly else None
        if lowered is not None and lowered >= self.soft_cap_percent:
            raise ValueError(
                f"onAnomaly.lowerSoftCapToPercent ({lowered}) must be below softCapPercent "
                f"({self.soft_cap_percent}): it lowers the soft cap"
            )
        return self


class TenantDecisionLog(_Strict):
    wait_for: Literal["fsync", "write", "none"]
    """How far the tenant's decisions go on the enforcer before the gateway's answer:
    ``fsync`` (no answer leaves unrecorded even if the host dies), ``write`` (in the page
    cache: a killed OPA loses none, a host crash can lose the last fsync's worth), ``none``
    (answered at once: a killed OPA can lose the few not yet written). Unset, the
    enforcer's default (``fsync`` unless its operator chose otherwise)."""


class Tenant(_Strict):
    id: Identifier
    name: Text
    plan: PlanName
    status: Literal["active", "suspended"] = "active"
    jurisdiction: Identifier | None = None
    """When set, the tenant is served only by regions of this jurisdiction."""
    time_zone: str = "UTC"
    """The IANA zone the tenant's budget windows are counted in (``Europe/Berlin``)."""
    budget: Budget
    decision_log: TenantDecisionLog | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return known_zone(zone)


def known_zone(zone: str) -> str:
    """``zone`` if the IANA database on this host knows it (ValueError otherwise)."""
    if not zone or len(zone) > 64 or zone.startswith(("/", ".")) or ".." in zone:
        raise ValueError(f"unknown time zone {zone!r}: expected an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {zone!r}: expected an IANA name such as Europe/Berlin"
        ) from error
    return zone


class TenantsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Tenants"]
    tenants: list[Tenant] = Field(min_length=1)


# --- Models ------------------------------------------------------------------


UsdPerMillionTokens = Annotated[
    float, Field(ge=0, le=MAX_USD_PER_MTOK, allow_inf_nan=False, strict=False)
]


class Price(_Strict):
    """What a model costs, in USD per million tokens (USD/Mtok * tokens = micro-USD)."""

    input_usd_per_mtok: UsdPerMillionTokens
    output_usd_per_mtok: UsdPerMillionTokens


class Model(_Strict):
    id: Identifier
    provider: Identifier
    plans: list[PlanName] = Field(min_length=1)
    """Plans whose tenants may use the model."""
    price: Price | None = None
    """Without one the model is unpriced: refused unless a tenant allows unpriced models."""
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    """The output bound of a chat that sends no ``max_tokens``; without it one is required."""
    fallbacks: list[Identifier] = Field(default_factory=list, max_length=MAX_FALLBACKS)
    """Models to route to, in order, while this one is degraded or down (see
    ``nexus_control.authoring.failover`` for the rules a fallback must meet)."""


class ModelsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Models"]
    models: list[Model] = Field(min_length=1)


# --- Providers -----------------------------------------------------------------


class OutlierDetection(_Strict):
    """Envoy's outlier detection: an endpoint answering ``consecutive5xx`` 5xx in a row is
    ejected for ``baseEjectionTimeMs`` (times the number of its ejections)."""

    consecutive_5xx: Annotated[int, Field(ge=1, le=1000)] = Field(
        DEFAULT_CONSECUTIVE_5XX, alias="consecutive5xx"
    )
    interval_ms: Annotated[int, Field(ge=10, le=3_600_000)] = DEFAULT_OUTLIER_INTERVAL_MS
    base_ejection_time_ms: Annotated[int, Field(ge=10, le=3_600_000)] = DEFAULT_BASE_EJECTION_MS
    max_ejection_percent: Annotated[int, Field(ge=1, le=100)] = DEFAULT_MAX_EJECTION_PERCENT


class CircuitBreakers(_Strict):
    """Envoy's default-priority thresholds per cluster: past them Envoy fails fast (503)."""

    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = DEFAULT_MAX_CONNECTIONS
    max_pending_requests: Annotated[int, Field(ge=1, le=1_000_000)] = DEFAULT_MAX_PENDING
    max_requests: Annotated[int, Field(ge=1, le=1_000_000)] = DEFAULT_MAX_REQUESTS
    max_retries: Annotated[int, Field(ge=0, le=1000)] = DEFAULT_MAX_RETRIES


class Endpoint(_Strict):
    region: Identifier
    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}$", strict=True)]
    port: Annotated[int, Field(ge=1, le=65535)]
    tls: bool = True


class Provider(_Strict):
    """Where a provider's models are served, per region, and how Envoy guards its clusters."""

    id: Identifier
    endpoints: list[Endpoint] = Field(min_length=1, max_length=MAX_ENDPOINTS)
    outlier_detection: OutlierDetection = OutlierDetection()
    circuit_breakers: CircuitBreakers = CircuitBreakers()


class ProvidersSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Providers"]
    providers: list[Provider] = Field(min_length=1)


# --- RBAC --------------------------------------------------------------------


class Role(_Strict):
    id: Identifier
    description: Text | None = None
    permissions: list[Permission] = Field(min_length=1)


class ApiKey(_Strict):
    """An API key, known only by the SHA-256 of its plain text."""

    id: Identifier
    sha256: Sha256Hex
    feature: Identifier | None = None
    """The product feature this key serves: its spend is booked to it and per-feature caps
    apply (a client cannot choose another by header)."""


class Binding(_Strict):
    tenant: Identifier
    role: Identifier
    users: list[Annotated[str, StringConstraints(min_length=1, max_length=254)]] = Field(
        default_factory=list
    )
    services: list[Identifier] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _users_are_emails_or_ids(cls, users: list[str]) -> list[str]:
        for user in users:
            if not _USER_RE.match(user):
                raise ValueError(f"user {user!r} must be an email address or a lower-case id")
        return users


_USER_RE = re.compile(r"^[a-z0-9._%+-]+(@[a-z0-9.-]+\.[a-z]{2,})?$")


class RbacSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["RBAC"]
    roles: list[Role] = Field(default_factory=list)
    bindings: list[Binding] = Field(default_factory=list)


# --- Identity ------------------------------------------------------------------


class Issuer(_Strict):
    """An identity provider whose JWTs authenticate users and services."""

    issuer: Annotated[str, StringConstraints(min_length=1, max_length=300, strict=True)]
    audience: Annotated[str, StringConstraints(min_length=1, max_length=300, strict=True)]
    tenant_claim: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "nexus_tenant"
    tenants: list[Identifier] = Field(min_length=1)
    """The tenants this issuer may speak for; a token naming any other is refused."""
    jwks: dict[str, Any] | None = None
    jwks_file: str | None = None
    """Path of a JWKS file, relative to the spec file."""


class RecordSigner(_Strict):
    """A record store (the chat store) whose short-lived tokens state a record's facts.

    The policy trusts a record's tenant, data class and creation time only from
    such a token (``x-nexus-record-token``), never from a client's header.
    """

    issuer: Annotated[str, StringConstraints(min_length=1, max_length=300, strict=True)]
    audience: Annotated[str, StringConstraints(min_length=1, max_length=300, strict=True)]
    tenants: list[Identifier] = Field(min_length=1)
    """The tenants whose records this store may speak for."""
    max_ttl_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    """The longest lifetime (exp - iat) a record token may have."""
    jwks: dict[str, Any] | None = None
    jwks_file: str | None = None
    """Path of a JWKS file, relative to the spec file."""


class IdentitySpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Identity"]
    issuers: list[Issuer] = Field(default_factory=list)
    record_signers: list[RecordSigner] = Field(default_factory=list)


# --- Tools -------------------------------------------------------------------


class Tool(_Strict):
    id: Identifier
    description: Text | None = None
    risk: Risk
    permission: Permission
    requires_approval: bool | None = None
    """Defaults to true for high and critical tools, which may not turn it off."""
    arguments: dict[str, Any]
    """JSON Schema (draft 2020-12 or earlier) the call's arguments must match."""

    @property
    def approval_required(self) -> bool:
        if self.requires_approval is None:
            return self.risk.rank >= RiskLevel.HIGH.rank
        return self.requires_approval


ApprovalTtl = Annotated[int, Field(ge=1, le=3600)]

DEFAULT_APPROVAL_TTL_S: dict[RiskLevel, int] = {
    RiskLevel.LOW: 3600,
    RiskLevel.MEDIUM: 3600,
    RiskLevel.HIGH: 1800,
    RiskLevel.CRITICAL: 900,
}
"""The longest an approval may live (exp - iat) per risk level, unless a Tools spec says less."""


class ApprovalTtlSpec(_Strict):
    """``approvalTtlSeconds``: per risk level, the longest an approval may live (1-3600 s)."""

    low: ApprovalTtl | None = None
    medium: ApprovalTtl | None = None
    high: ApprovalTtl | None = None
    critical: ApprovalTtl | None = None

    def resolved(self) -> dict[RiskLevel, int]:
        return {
            risk: getattr(self, risk.value) or default
            for risk, default in DEFAULT_APPROVAL_TTL_S.items()
        }


class ToolsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Tools"]
    tools: list[Tool] = Field(min_length=1)
    approval_ttl_seconds: ApprovalTtlSpec | None = None
    """At most one Tools document of a bundle sets it; the defaults fill what it leaves out."""


# --- Prompts -----------------------------------------------------------------


class PromptVersion(_Strict):
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,40}$", strict=True)]
    status: Literal["active", "deprecated", "retired"] = "active"


class Prompt(_Strict):
    id: Identifier
    owner: Identifier
    risk: Risk
    default_version: Annotated[str, StringConstraints(min_length=1, strict=True)]
    versions: list[PromptVersion] = Field(min_length=1)
    quality: Quality | None = None
    """Every version the rollout routes to needs a passing evaluation (checked at publish)."""


class PromptsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Prompts"]
    prompts: list[Prompt] = Field(min_length=1)


# --- Retention -----------------------------------------------------------------


class DataClass(_Strict):
    id: Identifier
    description: Text | None = None


class RetentionRule(_Strict):
    data_class: Identifier
    days: Annotated[int, Field(ge=1, le=36500)]
    delete: Literal["soft", "hard"] = "soft"
    legal_hold: bool = False


class TenantRetention(RetentionRule):
    tenant: Identifier


class RetentionSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Retention"]
    data_classes: list[DataClass] = Field(default_factory=list)
    defaults: list[RetentionRule] = Field(default_factory=list)
    policies: list[TenantRetention] = Field(default_factory=list)


# --- Rollouts ----------------------------------------------------------------


class Variant(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=80, strict=True)]
    weight: Annotated[int, Field(ge=0, le=100)]


class Override(_Strict):
    tenant: Identifier
    variant: Annotated[str, StringConstraints(min_length=1, max_length=80, strict=True)]


class Flag(_Strict):
    id: Identifier
    target: Literal["model", "prompt"]
    key: Identifier
    """The requested model alias, or the prompt id, this flag routes."""
    baseline: Annotated[str, StringConstraints(min_length=1, max_length=80, strict=True)]
    variants: list[Variant] = Field(min_length=1)
    canary_percent: Annotated[int, Field(ge=0, le=100)] = 0
    sticky: Literal["tenant", "subject"] = "tenant"
    kill_switch: bool = False
    overrides: list[Override] = Field(default_factory=list)
    quality: Quality | None = None
    """A model flag's thresholds: every model it routes to needs a passing evaluation
    (checked at publish). A prompt's are in its Prompts spec."""


class RolloutsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Rollouts"]
    flags: list[Flag] = Field(min_length=1)


# --- Rate limits ---------------------------------------------------------------

LIMITED_ROUTES: frozenset[str] = frozenset(GATEWAY_ROUTES)
"""The route names a rate limit may select (``nexus.request.route``)."""

RATE_UNIT_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
"""The windows envoyproxy/ratelimit counts in; local buckets refill once per unit."""

MAX_RATE = 10_000_000


class RateLimit(_Strict):
    """One token bucket: ``rate`` per ``unit``, holding at most ``burst``.

    ``key`` says what one bucket counts (each tenant, or each credential); the
    selectors (``tenants``, ``plans``, ``routes``, ``tools``) say which requests
    it applies to, and an empty selector means all of them. ``scope: shared``
    is one bucket for every enforcer (envoyproxy/ratelimit over Redis);
    ``scope: region`` is one bucket per enforcer (Envoy's local rate limit).
    """

    id: Identifier
    description: Text | None = None
    scope: Literal["shared", "region"]
    key: Literal["tenant", "credential"] = "tenant"
    counts: Literal["requests", "tokens"] = "requests"
    """``tokens``: LLM tokens (chat completions only, shared only), settled after the call."""
    unit: Literal["second", "minute", "hour", "day"]
    rate: Annotated[int, Field(ge=1, le=MAX_RATE)]
    burst: Annotated[int, Field(ge=1, le=MAX_RATE)] | None = None
    """Defaults to ``rate``; may not be less than it."""
    tenants: list[Identifier] = Field(default_factory=list)
    plans: list[PlanName] = Field(default_factory=list)
    routes: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=list
    )
    tools: list[Identifier] = Field(default_factory=list)

    @property
    def bucket(self) -> int:
        return self.rate if self.burst is None else self.burst


class RateLimitsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["RateLimits"]
    limits: list[RateLimit] = Field(min_length=1)


# --- SLOs ----------------------------------------------------------------------

MAX_CAPABILITIES = 32
"""Capabilities label the enforcers' decision metrics, so their number bounds those series."""

Ratio = Annotated[float, Field(gt=0, lt=1, strict=False)]


class LatencyObjective(_Strict):
    """``target`` of the capability's decisions answered within ``thresholdMs``."""

    threshold_ms: Annotated[float, Field(gt=0, strict=False)]
    """A bucket bound of ``nexus_decision_duration_seconds`` (checked by the resolver)."""
    target: Ratio


class Objectives(_Strict):
    availability: Ratio | None = None
    """The share of the capability's requests the enforcer answers (not shed, no error)."""
    latency: LatencyObjective | None = None


class Capability(_Strict):
    """An agent capability: a named group of gateway routes and tools, with its objectives.

    A tool call belongs to the capability naming its tool, else to the one naming its route;
    any other request to the one naming its route. A route or tool may be named once.
    """

    name: Identifier
    description: Text | None = None
    routes: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=list
    )
    tools: list[Identifier] = Field(default_factory=list)
    objectives: Objectives


class SLOsSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["SLOs"]
    capabilities: list[Capability] = Field(min_length=1)


SPEC_KINDS: dict[str, type[_Strict]] = {
    "Bundle": BundleSpec,
    "Regions": RegionsSpec,
    "Tenants": TenantsSpec,
    "Models": ModelsSpec,
    "RBAC": RbacSpec,
    "Identity": IdentitySpec,
    "Tools": ToolsSpec,
    "Prompts": PromptsSpec,
    "Retention": RetentionSpec,
    "Rollouts": RolloutsSpec,
    "RateLimits": RateLimitsSpec,
    "SLOs": SLOsSpec,
    "Providers": ProvidersSpec,
}
"""Every kind a bundle directory may hold, by its ``kind`` value."""

AnySpec = (
    BundleSpec
    | RegionsSpec
    | TenantsSpec
    | ModelsSpec
    | RbacSpec
    | IdentitySpec
    | ToolsSpec
    | PromptsSpec
    | RetentionSpec
    | RolloutsSpec
    | RateLimitsSpec
    | SLOsSpec
    | ProvidersSpec
)
