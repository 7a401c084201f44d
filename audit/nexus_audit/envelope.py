"""Envelope encryption: data keys wrapped by a master key behind `KeyWrapper`.

Each tenant, and each subject a decision names, gets its own random AES-256
data key. Only the wrapped form is stored (``data_keys.wrapped_key``); the
master key that wraps it never reaches the database. `LocalKeyWrapper` wraps
with AES-GCM under the master key file; a KMS (AWS KMS Encrypt/Decrypt with
an encryption context, Vault transit, ...) can stand in by implementing the
same two methods.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nexus_contract.errors import NexusError

__all__ = [
    "DATA_KEY_SIZE",
    "KeyUnwrapError",
    "KeyWrapper",
    "LocalKeyWrapper",
    "data_key_context",
]

DATA_KEY_SIZE = 32
_NONCE_SIZE = 12
_WRAP_LABEL = b"nexus-audit/data-key\x00"


class KeyUnwrapError(NexusError):
    """A wrapped data key does not unwrap: another master key, or the row was altered."""


class KeyWrapper(Protocol):
    """Wraps data keys under a master key the database never sees.

    ``context`` is authenticated, not secret: a wrapped key only unwraps with
    the context it was wrapped with (the key's id, tenant and subject), so a
    wrapped key copied onto another row is refused.
    """

    def wrap(self, key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalKeyWrapper:
    """AES-256-GCM key wrapping under a local master key: ``nonce || ciphertext+tag``."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != DATA_KEY_SIZE:
            raise ValueError(f"master key is {len(master_key)} bytes, expected {DATA_KEY_SIZE}")
        self._aead = AESGCM(master_key)

    def __repr__(self) -> str:
        return "LocalKeyWrapper(<master key hidden>)"

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, key, _WRAP_LABEL + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        nonce, sealed = wrapped[:_NONCE_SIZE], wrapped[_NONCE_SIZE:]
        try:
            return self._aead.decrypt(nonce, sealed, _WRAP_LABEL + context)
        except (InvalidTag, ValueError):
            raise KeyUnwrapError(
                "a data key does not unwrap under this master key: the master key file "
                "changed or the data_keys row was altered"
            ) from None


def data_key_context(key_id: str, tenant: str, subject: str | None) -> bytes:
    """The authenticated context a data key is wrapped with."""
    return b"\x00".join(part.encode() for part in (key_id, tenant, subject or ""))
