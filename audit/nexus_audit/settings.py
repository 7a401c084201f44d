"""Audit service settings, read from ``NEXUS_AUDIT_*`` environment variables, and its key files.

Every setting has a default that suits the one-machine demo. Key files not
set explicitly live in ``NEXUS_KEYS_DIR`` (default ``.nexus/keys``), the same
directory ``nexus-policy keys init`` writes, so ``nexus-policy audit …`` and
``serve`` always agree on the key. The key files are read and written by
`nexus_audit.keyfiles`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY_LEAVES",
    "DEFAULT_CHECKPOINT_EVERY_S",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_JOURNAL_FILE",
    "DEFAULT_KEYS_DIR",
    "DEFAULT_LOG_KEY_FILE",
    "DEFAULT_MASTER_KEY_FILE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_EVENTS",
    "DEFAULT_ORIGIN",
    "AuditSettings",
    "MasterKeyProvider",
]

DEFAULT_DATABASE_URL = "sqlite:///.nexus/audit.db"
DEFAULT_KEYS_DIR = Path(".nexus/keys")
DEFAULT_LOG_KEY_FILE = DEFAULT_KEYS_DIR / "audit-log.key"
DEFAULT_MASTER_KEY_FILE = DEFAULT_KEYS_DIR / "audit-master.key"
DEFAULT_JOURNAL_FILE = Path(".nexus/audit-checkpoints.jsonl")
DEFAULT_ORIGIN = "nexus.local/audit"
DEFAULT_CHECKPOINT_EVERY_LEAVES = 1000
DEFAULT_CHECKPOINT_EVERY_S = 5.0
DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 100_000
DEFAULT_MAX_INFLATED_BYTES = 512 * 1024 * 1024


class MasterKeyProvider(StrEnum):
    FILE = "file"
    PKCS11 = "pkcs11"


class AuditSettings(BaseSettings):
    """Settings of the audit service and of ``nexus-policy audit`` / ``evidence``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_AUDIT_", extra="ignore")

    keys_dir: Path = Field(
        default=DEFAULT_KEYS_DIR, validation_alias=AliasChoices("NEXUS_KEYS_DIR", "keys_dir")
    )
    """Where key files not set explicitly are (``NEXUS_KEYS_DIR``, shared with the CLI)."""
    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of the audit database (SQLite or postgresql+psycopg://); may be shared."""
    log_key_file: Path = DEFAULT_LOG_KEY_FILE
    """Signed-note private key (PRIVATE+KEY+...) that signs checkpoints; its name must be ORIGIN."""
    origin: str = DEFAULT_ORIGIN
    """The log's origin line in every checkpoint, and the name of its signing key."""
    master_key_provider: MasterKeyProvider = MasterKeyProvider.FILE
    """``file``: MASTER_KEY_FILE wraps data keys; ``pkcs11``: a key that never leaves a token."""
    master_key_file: Path = DEFAULT_MASTER_KEY_FILE
    """32 random bytes (base64) that wrap the per-tenant and per-subject payload data keys."""
    pkcs11_module: Path | None = None
    """PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so) for the ``pkcs11`` provider."""
    pkcs11_token: str = "nexus-audit"  # noqa: S105 - a token label, not a secret
    """Label of the token holding the master key."""
    pkcs11_pin_file: Path | None = None
    """File holding the token's user PIN (mode 0600)."""
    pkcs11_key_label: str = "audit-master"
    """Label of the AES-256 master key object on the token."""
    checkpoint_journal: Path = DEFAULT_JOURNAL_FILE
    """Append-only copy of every signed checkpoint, outside the database (on the audit host);
    default beside a SQLite database, else ``.nexus/audit-checkpoints.jsonl``."""
    checkpoint_every_leaves: int = DEFAULT_CHECKPOINT_EVERY_LEAVES
    """A checkpoint is signed as soon as the tree has grown by this many leaves."""
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S
    """...and at least this often (seconds) while the tree grows."""
    witness_policy_file: Path | None = None
    """C2SP tlog-policy naming the witnesses (with URLs) and the quorum; unset: no witnessing."""
    witness_timeout_s: float = 5.0
    """How long one witness may take to answer a checkpoint."""
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    """Largest decision-log upload accepted as received, compressed (413 beyond)."""
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
    """Largest upload once inflated, counted while inflating (413 beyond)."""
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    """Most decision events accepted in one upload, counted while parsing (413 beyond)."""
    max_uploads: int = 8
    """Uploads processed at once; more answer 429 with Retry-After."""
    max_uploads_per_enforcer: int = 2
    """Uploads of one enforcer processed at once; more answer 429 with Retry-After."""
    decision_max_age_s: float = 86_400.0
    """A decision older than this when it arrives is outside the time window."""
    decision_max_ahead_s: float = 60.0
    """A decision this far ahead of the audit clock is outside the time window."""
    time_skew: str = "flag"
    """``flag``: store an out-of-window decision with the receive time, flagged; ``refuse``: 422."""
    require_enforcer_tokens: bool = True
    """Refuse decision uploads by region-wide tokens: every enforcer must use its own (tokens are
    bound per enforcer since 0008; `false` only while old region-wide tokens are replaced)."""
    catalogs_dir: Path | None = None
    """Control catalogs directory; default: compliance-mappings/ of the checkout."""

    @model_validator(mode="after")
    def _keys_in_keys_dir(self) -> Self:
        if "log_key_file" not in self.model_fields_set:
            self.log_key_file = self.keys_dir / DEFAULT_LOG_KEY_FILE.name
        if "master_key_file" not in self.model_fields_set:
            self.master_key_file = self.keys_dir / DEFAULT_MASTER_KEY_FILE.name
        if "checkpoint_journal" not in self.model_fields_set and self.database_url.startswith(
            "sqlite:///"
        ):
            database = Path(self.database_url.removeprefix("sqlite:///"))
            self.checkpoint_journal = database.with_name(database.name + ".checkpoints.jsonl")
        if self.time_skew not in ("flag", "refuse"):
            raise ValueError("NEXUS_AUDIT_TIME_SKEW must be 'flag' or 'refuse'")
        return self
