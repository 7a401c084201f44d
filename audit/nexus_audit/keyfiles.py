"""The audit service's key files: the log's signed-note key and the payload master key.

Both are created once (``nexus-policy audit init-keys``, or ``keys init``),
readable by their owner only, and never overwritten by accident: a new log key
cannot verify old checkpoints, and a new master key cannot unwrap the data
keys the old one wrapped.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from nexus_audit.note import MalformedKeyError, Signer
from nexus_audit.settings import DEFAULT_ORIGIN
from nexus_contract.errors import NexusError
from nexus_runtime.secretfile import write_secret

__all__ = [
    "MASTER_KEY_SIZE",
    "KeyFileError",
    "init_log_key",
    "init_master_key",
    "load_log_key",
    "load_master_key",
]

MASTER_KEY_SIZE = 32
"""The master key is an AES-256 key: 32 random bytes, stored base64-encoded."""


class KeyFileError(NexusError):
    """A key file is missing, already exists, or does not hold a key of the expected form."""


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
    try:
        write_secret(path, text.encode("utf-8"), overwrite=force)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; pass force to replace it") from None
