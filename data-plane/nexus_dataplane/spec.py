"""What differs between two enforcers, and the error a rendered config can meet.

An enforcer is one OPA (with our ext_authz plugin) and, on a gateway pod, one
Envoy in front of it. `EnforcerSpec` is everything their configs need;
`nexus_dataplane.opa` and `nexus_dataplane.envoy` render them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nexus_contract.errors import NexusError
from nexus_dataplane.providers import ProviderRoutes
from nexus_dataplane.ratelimit import RateLimitPlan

__all__ = [
    "DECISION_LOG_DIR",
    "DEFAULT_BODY_LIMITS",
    "LONG_POLL_TIMEOUT_S",
    "ConfigError",
    "EnforcerSpec",
    "TracingSpec",
]

LONG_POLL_TIMEOUT_S = 30
DECISION_LOG_DIR = "decision-log"
DEFAULT_BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/v1/chat/completions", 1024 * 1024),
    ("/v1/tools/", 64 * 1024),
)
"""Path prefixes whose policy reads the request body, and the most bytes forwarded to OPA
(Envoy answers 413 beyond).

Tool calls (their arguments are checked and approvals bind to them) and chat
completions (their size and max_tokens bound the worst-case cost) need it; every
other body reaches the upstream without being buffered for the policy. The decision
log keeps no chat body (rego/system/log/mask.rego)."""


class ConfigError(NexusError):
    """A rendered configuration was refused by the program it is for."""


@dataclass(frozen=True)
class TracingSpec:
    """Where an enforcer's Envoy and OPA send spans (OTLP over gRPC), and how many.

    Envoy makes the sampling decision (``sample_percent`` of requests); OPA's
    sampler is parent-based, so the Check span follows Envoy's decision."""

    otlp_host: str
    otlp_grpc_port: int
    otlp_http_port: int
    sample_percent: float = 100.0

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL, for our Python processes (the upstream)."""
        return f"http://{self.otlp_host}:{self.otlp_http_port}"


@dataclass(frozen=True)
class EnforcerSpec:
    """Everything that differs between two enforcers."""

    region: str
    enforcer_id: str
    control_plane_url: str
    token: str
    key_id: str
    verification_key_pem: str
    persistence_dir: Path
    grpc_port: int
    opa_port: int
    envoy_port: int
    envoy_admin_port: int
    upstream_host: str
    upstream_port: int
    audit_url: str | None = None
    audit_token: str | None = None
    long_poll_timeout_s: int = LONG_POLL_TIMEOUT_S
    body_limits: tuple[tuple[str, int], ...] = DEFAULT_BODY_LIMITS
    key_algorithm: str = "RS256"
    """Algorithm of ``key_id``'s key (RS256, PS256, ES256, EdDSA)."""
    extra_keys: tuple[tuple[str, str, str], ...] = ()
    """Further trusted bundle keys as (key id, algorithm, PEM): the keys of a rotation window."""
    rate_limits: RateLimitPlan | None = None
    """The bundle's rate limits: Envoy gets the local and global rate limit filters."""
    ratelimit_port: int | None = None
    """gRPC port of the envoyproxy/ratelimit service the shared limits need."""
    providers: ProviderRoutes | None = None
    """The bundle's provider clusters: chats go to the routed model's provider. None: every
    request goes to ``upstream_host``:``upstream_port`` (the gateway)."""
    refusal_log_dir: Path | None = None
    """Where Envoy writes its rate limit refusals (default: ``persistence_dir``)."""
    decision_log_dir: Path | None = None
    """The durable decision log's segments (0700); default ``decision-log`` beside
    ``persistence_dir``, i.e. in the enforcer's state dir."""
    durable_log: bool = True
    """Decision events go through the durable log; off, OPA's in-memory uploader
    ships them (benchmarks compare the two; a crash then loses its buffer)."""
    wait_for: Literal["fsync", "write", "none"] = "fsync"
    """How far a decision event goes before the ext_authz answer: fsynced (survives a host
    crash), written to the page cache (survives a killed OPA), or not at all (answered at
    once); a tenant's signed spec may choose otherwise for its own decisions."""

    @property
    def segment_dir(self) -> Path:
        """Where the durable decision log keeps its segments."""
        return self.decision_log_dir or self.persistence_dir.parent / DECISION_LOG_DIR

    tracing: TracingSpec | None = None
    """Traces to an OTLP collector; None: no tracer in Envoy, no span in OPA."""
    metric_tenants: tuple[str, ...] = ()
    """Tenants counted on their own in nexus_tenant_decisions_total (at most 50)."""
    shadow_sample_percent: float = 0.0
    """Share of answered Checks the plugin evaluates again against the region's shadow
    candidate (``POST /v1/shadow``), 0 to 100; 0 renders no shadow block."""
    budget_reservations: bool = True
    """The plugin holds each allowed priced chat's worst case against its budgets until the
    state bundle counts its spend (data-plane/opa/README.md); False turns that off."""
