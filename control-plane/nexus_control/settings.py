"""Control-plane settings, read from ``NEXUS_*`` environment variables.

Every setting has a default that suits the one-machine demo; the README's
settings table documents each one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.factory import DEFAULT_PKCS11_MODULE, DEFAULT_TOKEN_LABEL, ProviderKind

__all__ = [
    "APPROVAL_JWKS_NAME",
    "APPROVAL_KEY_NAME",
    "DEFAULT_KEYS_DIR",
    "MAX_METRIC_TENANTS",
    "SIGNING_KEY_NAME",
    "ControlSettings",
]

DEFAULT_KEYS_DIR = Path(".nexus/keys")
SIGNING_KEY_NAME = "bundle-signing.pem"
APPROVAL_KEY_NAME = "approval-signing.pem"
APPROVAL_JWKS_NAME = "approval-signing.jwks.json"
MAX_METRIC_TENANTS = 50
"""Most tenants NEXUS_METRIC_TENANTS may name: each costs three series per scrape."""
_TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


class ControlSettings(BaseSettings):
    """Settings of the control plane and its CLI."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_", extra="ignore")

    opa_bin: Path | None = None
    """The OPA binary; default: `opa` beside the running Python, then on PATH."""
    keys_dir: Path = DEFAULT_KEYS_DIR
    """Where `nexus-policy keys init` writes, and where keys are looked up by default."""
    key_provider: ProviderKind = "file"
    """Where the control plane's signing keys live: PEM files in KEYS_DIR, or a PKCS#11 token."""
    pkcs11_module: Path = DEFAULT_PKCS11_MODULE
    """The PKCS#11 library (an HSM's, a cloud KMS's, SoftHSM2's)."""
    pkcs11_token_label: str = DEFAULT_TOKEN_LABEL
    """The token holding the keys."""
    pkcs11_pin_file: Path | None = None
    """File (mode 0600) holding the token's user PIN."""
    signing_algorithm: Algorithm = Algorithm.RS256
    """Algorithm of bundle-signing keys the control plane makes (RS256, PS256, ES256, EdDSA)."""
    signing_key_file: Path | None = None
    """File provider: the first bundle-signing key (made if absent); KEYS_DIR/bundle-signing.pem.
    Also the dev key `nexus-policy build` signs local archives with."""
    signing_key_id: str = "nexus-bundle-signing"
    """Key id of the first bundle-signing key; rotated keys get ``<id>-<n>``."""
    approval_key_file: Path | None = None
    """File provider: the first approval key (P-256, made if absent);
    KEYS_DIR/approval-signing.pem."""
    approval_jwks_file: Path | None = None
    """Public JWKS a local build compiles in; default KEYS_DIR/approval-signing.jwks.json."""
    dist_dir: Path = Path("dist")
    """Where `nexus-policy build` writes bundles."""
    verification_key_file: Path | None = None
    """PEM public key publications are verified with; default: the signing key's public part."""

    database_url: str = "sqlite:///.nexus/control.db"
    """SQLAlchemy URL of the control plane's database (SQLite or postgresql+psycopg://)."""
    redis_url: str | None = None
    """Redis for spend counters; unset: counters live in the control plane's memory."""
    host: str = "127.0.0.1"
    port: int = 8700
    """Where `nexus-policy serve` listens."""
    url: str | None = None
    """The control plane's URL as enforcers and the CLI reach it; default http://HOST:PORT."""
    admin_token: str | None = None
    """Bearer token the CLI sends to the control plane's API."""
    regions: list[str] = ["eu-west-1"]
    """Without a fleet file: the regions, all in one wave with no soak."""
    fleet_file: Path | None = None
    """The fleet (regions, waves, expected enforcers, soak, deadlines); see deploy/fleet.yaml."""
    long_poll_max_s: int = 60
    """Longest a bundle long poll is held (OPA's long_polling_timeout_seconds is capped to it)."""
    colocate_audit: bool = True
    """Run the audit service (decision-log intake, Merkle log) in the control plane's process."""
    state_debounce_s: float = 0.2
    """Usage reports arriving within this window rebuild the state bundle once."""
    state_refresh_s: float = Field(default=3.0, ge=0, le=300)
    """After the last usage report, the state bundle is rebuilt once more this much later
    with a new ``as_of``, so enforcers release the budget holds of requests that ended
    meanwhile; 0: no trailing rebuild."""
    usage_max_in_flight: int = Field(default=64, ge=1, le=10_000)
    """Usage reports processed at once; the next one is answered 429 with retry-after."""
    usage_retry_after_s: int = Field(default=1, ge=1, le=300)
    """The retry-after of a usage report refused as busy."""
    console_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    """A console session ends this long after sign-in, however active."""
    console_idle_s: int = Field(default=30 * 60, ge=30, le=24 * 3600)
    """…and after this long without a request."""
    console_secure_cookie: bool | None = None
    """Mark the session cookie Secure; unset: when the request came over HTTPS."""
    console_assets_dir: Path | None = None
    """The npm assets the console serves (Chart.js); default: what bootstrap installed."""
    console_exports_dir: Path = Path(".nexus/console-exports")
    """Where evidence archives exported from the console wait to be downloaded (mode 0700)."""
    metric_tenants: Annotated[tuple[str, ...], NoDecode] = ()
    """Tenant ids (comma-separated) whose spend and cap /metrics exports with a tenant label;
    at most MAX_METRIC_TENANTS, so the series count stays bounded."""

    @field_validator("metric_tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        tenants = tuple(dict.fromkeys(str(v) for v in value))
        if len(tenants) > MAX_METRIC_TENANTS:
            raise ValueError(
                f"NEXUS_METRIC_TENANTS names {len(tenants)} tenants; at most "
                f"{MAX_METRIC_TENANTS} get a tenant label in /metrics (each adds series to "
                "every scrape): keep the ones dashboards and alerts watch"
            )
        bad = [t for t in tenants if not _TENANT_ID.match(t)]
        if bad:
            raise ValueError(
                f"NEXUS_METRIC_TENANTS: {', '.join(repr(t[:70]) for t in bad[:5])} "
                "is not a tenant id (lower-case letters, digits, '.', '_', '-')"
            )
        return tenants

    @property
    def base_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.keys_dir / SIGNING_KEY_NAME

    @property
    def approval_key_path(self) -> Path:
        return self.approval_key_file or self.keys_dir / APPROVAL_KEY_NAME

    @property
    def approval_jwks_path(self) -> Path:
        if self.approval_jwks_file is not None:
            return self.approval_jwks_file
        return self.approval_key_path.with_name(APPROVAL_JWKS_NAME)
