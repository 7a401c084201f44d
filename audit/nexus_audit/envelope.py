"""Envelope encryption: data keys wrapped by a master key behind `KeyWrapper`.

Each tenant, and each subject a decision names, gets its own random AES-256
data key. Only the wrapped form is stored (``data_keys.wrapped_key``); the
master key that wraps it never reaches the database. `LocalKeyWrapper` wraps
with AES-GCM under the master key file; `Pkcs11KeyWrapper` asks a PKCS#11
token (an HSM; SoftHSM2 in the tests) to do the AES-GCM, so the master key,
created on the token as sensitive and not extractable, never leaves it. A KMS
(AWS KMS Encrypt/Decrypt with an encryption context, Vault transit, ...) can
stand in by implementing the same two methods.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nexus_contract.errors import NexusError

__all__ = [
    "DATA_KEY_SIZE",
    "KeyUnwrapError",
    "KeyWrapper",
    "LocalKeyWrapper",
    "Pkcs11Error",
    "Pkcs11KeyWrapper",
    "data_key_context",
]

DATA_KEY_SIZE = 32
_NONCE_SIZE = 12
_WRAP_LABEL = b"nexus-audit/data-key\x00"


class Pkcs11Error(NexusError):
    """The PKCS#11 token, its PIN or the master key object cannot be used."""


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


class Pkcs11KeyWrapper:
    """AES-256-GCM key wrapping done by a PKCS#11 token: ``nonce || ciphertext+tag``.

    The master key is the token's AES key labelled ``key_label``; this process
    only ever holds a handle to it. One session is kept open and used under a
    lock (PKCS#11 sessions are not thread-safe).
    """

    def __init__(self, module: Path, token_label: str, pin: str, key_label: str) -> None:
        try:
            import pkcs11
            from pkcs11 import KeyType, ObjectClass
        except ImportError:  # pragma: no cover - python-pkcs11 is a dependency
            raise Pkcs11Error("python-pkcs11 is not installed") from None
        self._lock = threading.Lock()
        try:
            lib = pkcs11.lib(str(module))
            token = lib.get_token(token_label=token_label)
            self._session: Any = _open(token, pin, rw=False)
            self._key: Any = self._session.get_key(
                label=key_label, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY
            )
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise Pkcs11Error(
                f"PKCS#11 token {token_label!r} ({module}): cannot open the master key "
                f"{key_label!r}: {type(exc).__name__} {exc}".rstrip()
            ) from None

    def __repr__(self) -> str:
        return "Pkcs11KeyWrapper(<master key on the token>)"

    @staticmethod
    def create_key(module: Path, token_label: str, pin: str, key_label: str) -> None:
        """Generate the master key on the token: AES-256, sensitive, never extractable."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        token = pkcs11.lib(str(module)).get_token(token_label=token_label)
        with _open(token, pin, rw=True) as session:
            existing = list(
                session.get_objects(
                    {Attribute.LABEL: key_label, Attribute.CLASS: ObjectClass.SECRET_KEY}
                )
            )
            if existing:
                return
            session.generate_key(
                KeyType.AES,
                256,
                label=key_label,
                store=True,
                template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                },
            )

    def wrap(self, key: bytes, context: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce = os.urandom(_NONCE_SIZE)
        with self._lock:
            sealed = self._key.encrypt(
                key,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, _WRAP_LABEL + context, 128),
            )
        return nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce, sealed = wrapped[:_NONCE_SIZE], wrapped[_NONCE_SIZE:]
        try:
            with self._lock:
                return bytes(
                    self._key.decrypt(
                        sealed,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(nonce, _WRAP_LABEL + context, 128),
                    )
                )
        except pkcs11.PKCS11Error:
            raise KeyUnwrapError(
                "a data key does not unwrap under the token's master key: another key, or "
                "the data_keys row was altered"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._session.close()


def _open(token: Any, pin: str, *, rw: bool) -> Any:
    """A session on ``token``, logged in: a login holds for the whole process (every session
    of one application shares it), so another user of the token may have done it already."""
    import pkcs11

    try:
        return token.open(user_pin=pin, rw=rw)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=rw)
