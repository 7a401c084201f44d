"""Audit service settings, read from ``NEXUS_AUDIT_*`` environment variables, and its key files.

Every setting has a default that suits the one-machine demo. The key files
they point at are read and written by `nexus_audit.keyfiles`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY_LEAVES",
    "DEFAULT_CHECKPOINT_EVERY_S",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_LOG_KEY_FILE",
    "DEFAULT_MASTER_KEY_FILE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_EVENTS",
    "DEFAULT_ORIGIN",
    "AuditSettings",
]

DEFAULT_DATABASE_URL = "sqlite:///.nexus/audit.db"
DEFAULT_LOG_KEY_FILE = Path(".nexus/keys/audit-log.key")
DEFAULT_MASTER_KEY_FILE = Path(".nexus/keys/audit-master.key")
DEFAULT_ORIGIN = "nexus.local/audit"
DEFAULT_CHECKPOINT_EVERY_LEAVES = 1000
DEFAULT_CHECKPOINT_EVERY_S = 5.0
DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 100_000


class AuditSettings(BaseSettings):
    """Settings of the audit service and of ``nexus-policy audit`` / ``evidence``."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_AUDIT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of the audit database (SQLite or postgresql+psycopg://); may be shared."""
    log_key_file: Path = DEFAULT_LOG_KEY_FILE
    """Signed-note private key (PRIVATE+KEY+...) that signs checkpoints; its name must be ORIGIN."""
    origin: str = DEFAULT_ORIGIN
    """The log's origin line in every checkpoint, and the name of its signing key."""
    master_key_file: Path = DEFAULT_MASTER_KEY_FILE
    """32 random bytes (base64) that wrap the per-tenant and per-subject payload data keys."""
    checkpoint_every_leaves: int = DEFAULT_CHECKPOINT_EVERY_LEAVES
    """A checkpoint is signed as soon as the tree has grown by this many leaves."""
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S
    """...and at least this often (seconds) while the tree grows."""
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    """Largest decision-log upload accepted, compressed and decompressed (413 beyond)."""
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    """Most decision events accepted in one upload (413 beyond)."""
    catalogs_dir: Path | None = None
    """Control catalogs directory; default: compliance-mappings/ of the checkout."""
