"""The compiled config, ``data.nexus.config``: one shape, written by the compiler, read by all.

The compiler (`nexus_control.authoring.compiler`) produces it, the Rego library
decides from it, the diff (`nexus_control.authoring.diff`) compares two of them,
budgets read caps from it. `rego/README.md` documents the same shape for policy
authors; change them together. Every collection is an object keyed by id, so
a decision costs constant-time lookups.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ApiKeyEntry",
    "ApprovalConfig",
    "BudgetConfig",
    "CompiledConfig",
    "FlagConfig",
    "IssuerConfig",
    "ModelConfig",
    "OnAnomalyConfig",
    "PriceConfig",
    "PromptConfig",
    "QualityGateConfig",
    "RateLimitConfig",
    "RecordSignerConfig",
    "RetentionEntry",
    "RoleConfig",
    "RolloutsConfig",
    "TenantConfig",
    "ToolConfig",
    "VariantConfig",
    "WindowConfig",
]


class OnAnomalyConfig(TypedDict):
    lower_soft_cap_to_ratio: NotRequired[float]
    hold_models_above_usd_per_mtok: NotRequired[float]


class WindowConfig(TypedDict):
    """A budget window other than the calendar month (`nexus_control.budgets.window`)."""

    kind: Literal["week", "day", "days"]
    days: NotRequired[int]
    """Only for ``days``: the window's length."""
    anchor: NotRequired[str]
    """Only for ``days``: the first day (``YYYY-MM-DD``) of one window of the series."""


class BudgetConfig(TypedDict):
    monthly_cap_usd: float
    """The cap per window (the name predates windows: a calendar month by default)."""
    window: NotRequired[WindowConfig]
    """Absent: the calendar month, as before windows (so such configs compile unchanged)."""
    per_model: dict[str, float]
    per_feature: dict[str, float]
    soft_cap_ratio: float
    on_hard_cap: Literal["refuse", "disable"]
    before_state: Literal["refuse", "allow"]
    max_request_usd: NotRequired[float]
    allow_unpriced_models: NotRequired[bool]
    """Present (true) only when the tenant serves chats on unpriced models."""
    on_anomaly: NotRequired[OnAnomalyConfig]
    """Only for a tenant whose spec chooses: what holds while a spend anomaly is open."""


class DecisionLogConfig(TypedDict):
    wait_for: Literal["fsync", "write", "none"]


class TenantConfig(TypedDict):
    name: str
    plan: str
    status: Literal["active", "suspended"]
    jurisdiction: str | None
    time_zone: NotRequired[str]
    """The IANA zone the tenant's windows are counted in; absent: UTC."""
    budget: BudgetConfig
    decision_log: NotRequired[DecisionLogConfig]
    """Only for a tenant whose spec chooses: the policy then states it in each decision."""


class PriceConfig(TypedDict):
    """USD per million tokens, so that price * tokens is micro-USD."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float


class ModelConfig(TypedDict):
    provider: str
    plans: dict[str, bool]
    price: NotRequired[PriceConfig]
    """Absent: the model is unpriced (see rego/nexus/cost.rego)."""
    max_output_tokens: NotRequired[int]
    fallbacks: NotRequired[list[str]]
    """Models routed to, in order, while this one is degraded or down."""


class EndpointConfig(TypedDict):
    region: str
    host: str
    port: int
    tls: bool


class OutlierDetectionConfig(TypedDict):
    consecutive_5xx: int
    interval_ms: int
    base_ejection_time_ms: int
    max_ejection_percent: int


class CircuitBreakersConfig(TypedDict):
    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int


class ProviderConfig(TypedDict):
    endpoints: list[EndpointConfig]
    outlier_detection: OutlierDetectionConfig
    circuit_breakers: CircuitBreakersConfig


class RoleConfig(TypedDict):
    permissions: dict[str, bool]


class ApiKeyEntry(TypedDict):
    tenant: str
    subject: str
    feature: NotRequired[str]
    """The product feature the key's spend is booked to (per-feature caps read it)."""


class IssuerConfig(TypedDict):
    audience: str
    tenant_claim: str
    tenants: dict[str, bool]
    jwks: str
    """The issuer's JWKS as compact JSON text (what ``io.jwt.decode_verify`` takes)."""


class RecordSignerConfig(TypedDict):
    audience: str
    tenants: dict[str, bool]
    max_ttl_s: int
    jwks: str
    """The record store's JWKS as compact JSON text."""


class ApprovalConfig(TypedDict):
    issuer: str
    audience: str
    jwks: str
    max_ttl_s: dict[str, int]
    """Per risk level (low, medium, high, critical): the longest exp - iat the policy accepts."""


class ToolConfig(TypedDict):
    risk: Literal["low", "medium", "high", "critical"]
    permission: str
    approval_required: bool
    schema: dict[str, Any]


class PromptVersionConfig(TypedDict):
    status: Literal["active", "deprecated", "retired"]


class PromptConfig(TypedDict):
    owner: str
    risk: Literal["low", "medium", "high", "critical"]
    default_version: str
    versions: dict[str, PromptVersionConfig]


class RetentionEntry(TypedDict):
    days: int
    delete: Literal["soft", "hard"]
    legal_hold: bool


class VariantConfig(TypedDict):
    name: str
    weight: int
    # ``from`` is a keyword: the functional form below spells the slot bounds.


VariantBounds = TypedDict("VariantBounds", {"from": str, "to": str})


class SlottedVariant(VariantConfig, VariantBounds):
    """A variant with its ``[from, to)`` slot range (see rego/README.md, bucketing)."""


class FlagConfig(TypedDict):
    id: str
    baseline: str
    canary_percent: int
    canary_below: str
    sticky: Literal["tenant", "subject"]
    kill_switch: bool
    variants: list[SlottedVariant]
    overrides: dict[str, str]


class RolloutsConfig(TypedDict):
    models: dict[str, FlagConfig]
    prompts: dict[str, FlagConfig]


class CapabilitiesConfig(TypedDict):
    """Which agent capability (SLOs spec) each route and each tool belongs to."""

    routes: dict[str, str]
    tools: dict[str, str]


class RateLimitConfig(TypedDict):
    """One token bucket (see `nexus_control.authoring.ratelimits`); empty selectors match all."""

    scope: Literal["shared", "region"]
    key: Literal["tenant", "credential"]
    counts: Literal["requests", "tokens"]
    unit: Literal["second", "minute", "hour", "day"]
    rate: int
    burst: int
    tenants: dict[str, bool]
    plans: dict[str, bool]
    routes: dict[str, bool]
    tools: dict[str, bool]


class BundleInfo(TypedDict):
    name: str


class RegionConfig(TypedDict):
    jurisdiction: str


class QualityGateConfig(TypedDict):
    """One ``quality`` block: its thresholds (YAML names) and what it gates, each with how
    the rollout routes traffic to it. Signed with the bundle, so the semantic diff shows a
    loosened threshold and approval re-checks the evaluations against what was signed."""

    kind: Literal["prompt", "model"]
    id: str
    """The prompt's id, or the model flag's."""
    thresholds: dict[str, float]
    routes: dict[str, str]
    """Version (a prompt's) or model (a flag's) → how it receives traffic."""


class CompiledConfig(TypedDict):
    bundle: BundleInfo
    regions: dict[str, RegionConfig]
    tenants: dict[str, TenantConfig]
    models: dict[str, ModelConfig]
    roles: dict[str, RoleConfig]
    grants: dict[str, dict[str, dict[str, bool]]]
    """Per tenant, per subject (``user:…``, ``service:…``, ``apikey:…``): its permissions."""
    api_keys: dict[str, ApiKeyEntry]
    """By SHA-256 (hex) of the key."""
    issuers: dict[str, IssuerConfig]
    record_signers: dict[str, RecordSignerConfig]
    """By issuer: the stores whose record tokens state a record's tenant, class and age."""
    approval: ApprovalConfig
    tools: dict[str, ToolConfig]
    prompts: dict[str, PromptConfig]
    retention: dict[str, dict[str, RetentionEntry]]
    """Per tenant (``*``: the defaults), per data class."""
    rollouts: RolloutsConfig
    rate_limits: NotRequired[dict[str, RateLimitConfig]]
    """By limit id; present only when the bundle has RateLimits specs."""
    capabilities: NotRequired[CapabilitiesConfig]
    """Present only when the bundle has SLOs specs."""
    providers: NotRequired[dict[str, ProviderConfig]]
    """By provider id; present only when the bundle has Providers specs."""
    failover: NotRequired[dict[str, list[str]]]
    """Jurisdiction → regions its traffic may fail over to, in order; only when set."""
    quality: NotRequired[dict[str, QualityGateConfig]]
    """By ``prompt:<id>`` or ``flag:<id>``: present only when a spec declares ``quality``."""
