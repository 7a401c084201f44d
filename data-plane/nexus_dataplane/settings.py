"""Data-plane settings, read from ``NEXUS_DATAPLANE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nexus_dataplane.spec import DEFAULT_BODY_LIMITS

__all__ = ["DataPlaneSettings"]


class DataPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_DATAPLANE_", extra="ignore")

    control_plane_url: str | None = None
    """Where enforcers poll bundles and report status; default: the control plane's own URL."""
    audit_url: str | None = None
    """Where enforcers ship decision logs; default: the control plane URL."""
    token: str | None = None
    """One enforcer's bearer token (bound to its id and region); `up` enrols each enforcer
    with its own token when unset."""
    key_id: str = "nexus-bundle-signing"
    """The key id bundles are signed with (`signing.keyid`)."""
    verification_key_file: Path = Path(".nexus/keys/bundle-signing.pub.pem")
    """PEM public key enforcers verify bundles with."""
    workdir: Path = Path(".nexus/dataplane")
    """Configs, logs and persisted bundles of local enforcers."""
    rate_limits_bundle: Path | None = None
    """Bundle directory whose RateLimits specs the enforcers' Envoys enforce (none: no limits);
    with shared limits, `up` also starts envoyproxy/ratelimit (and Redis unless ``redis_url``)."""
    providers_bundle: Path | None = None
    """Bundle directory whose Providers and Models the enforcers' Envoys route chats by: each
    chat to the cluster of the routed model's provider (none: every request to the upstream)."""
    redis_url: str | None = None
    """Redis the ratelimit service counts shared limits in; default: one `up` starts."""
    ratelimit_bin: Path | None = None
    """envoyproxy/ratelimit binary; default: the one ``scripts/tool ratelimit`` built."""
    shadow_sample_percent: float = Field(default=0.0, ge=0, le=100)
    """Share of answered Checks each enforcer evaluates against its region's shadow candidate."""
    budget_reservations: bool = True
    """Each enforcer holds an allowed priced chat's worst case against its budgets until the
    state bundle counts its spend, refusing what would not fit beside the holds."""
    body_limits: dict[str, int] = dict(DEFAULT_BODY_LIMITS)
    """Path prefix → most request-body bytes Envoy forwards to OPA there (JSON); others: none."""
