"""Audit service settings, read from ``NEXUS_AUDIT_*`` environment variables, and its key files.

Every setting has a default that suits the one-machine demo. The log's signing
key and the master key are files created once by `init_log_key` and
`init_master_key` (``nexus-policy audit init-keys``), readable by their owner only.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from nexus_audit.note import MalformedKeyError, Signer

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY_LEAVES",
    "DEFAULT_CHECKPOINT_EVERY_S",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_LOG_KEY_FILE",
    "DEFAULT_MASTER_KEY_FILE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_EVENTS",
    "DEFAULT_ORIGIN",
    "MASTER_KEY_SIZE",
    "AuditSettings",
    "KeyFileError",
    "init_log_key",
    "init_master_key",
    "load_log_key",
    "load_master_key",
]

DEFAULT_DATABASE_URL = "sqlite:///.nexus/audit.db"
DEFAULT_LOG_KEY_FILE = Path(".nexus/keys/audit-log.key")
DEFAULT_MASTER_KEY_FILE = Path(".nexus/keys/audit-master.key")
DEFAULT_ORIGIN = "nexus.local/audit"
DEFAULT_CHECKPOINT_EVERY_LEAVES = 1000
DEFAULT_CHECKPOINT_EVERY_S = 5.0
DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 100_000

MASTER_KEY_SIZE = 32
"""The master key is an AES-256 key: 32 random bytes, stored base64-encoded."""


class KeyFileError(Exception):
    """A key file is missing, already exists, or does not hold a key of the expected form."""


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


def init_log_key(path: Path, origin: str = DEFAULT_ORIGIN, *, force: bool = False) -> Signer:
    """Create a fresh Ed25519 log key named ``origin`` in ``path`` (mode 0600).

    Also writes the public verifier key to ``<path>.pub``. Refuses to overwrite
    an existing key unless ``force``: a new key cannot verify old checkpoints.
    """
    signer = Signer.generate(origin)
    _write_secret(path, signer.private_key_string() + "\n", force=force)
    public = path.with_name(path.name + ".pub")
    public.write_text(str(signer.verifier) + "\n", encoding="utf-8")
    return signer


def load_log_key(path: Path) -> Signer:
    """Read the log's signing key written by `init_log_key`."""
    text = _read(path, "log signing key", "nexus-policy audit init-keys")
    try:
        return Signer.parse(text.strip())
    except MalformedKeyError as exc:
        raise KeyFileError(f"{path}: not a signed-note private key: {exc}") from None


def init_master_key(path: Path, *, force: bool = False) -> bytes:
    """Create a random 32-byte master key in ``path`` (base64, mode 0600).

    Refuses to overwrite an existing key unless ``force``: every data key
    wrapped by the old master key would become unreadable.
    """
    key = os.urandom(MASTER_KEY_SIZE)
    _write_secret(path, base64.b64encode(key).decode() + "\n", force=force)
    return key


def load_master_key(path: Path) -> bytes:
    """Read the master key written by `init_master_key`."""
    text = _read(path, "master key", "nexus-policy audit init-keys")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{path}: the master key is not base64") from None
    if len(key) != MASTER_KEY_SIZE:
        raise KeyFileError(f"{path}: master key is {len(key)} bytes, expected {MASTER_KEY_SIZE}")
    return key


def _read(path: Path, what: str, how: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no {what} here; create it with `{how}`") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {what}: {exc}") from None


def _write_secret(path: Path, text: str, *, force: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; pass force to replace it") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
