"""C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature), Ed25519 ``cosignature/v1``.

A cosignature is a note signature line on a checkpoint by a *cosigner* (a
witness). Its key ID is computed with signature type 0x04, so it never
collides with the log's own Ed25519 (0x01) key ID even for the same key
material, and its signature is a ``timestamped_signature``:

    u64 timestamp (big-endian) || Ed25519 signature

over the message ``cosignature/v1\\ntime <timestamp>\\n`` followed by the
checkpoint's whole note text. Semantically: as of ``timestamp``, this is the
largest consistent tree the cosigner has seen for the log.

Key strings follow the signed-note forms with type 0x04:

    verifier  <name>+<hex key ID>+<base64(0x04 || public key)>
    signer    PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>

(transparency-dev's omniwitness reads the same private key form.)
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nexus_audit.note import (
    MalformedKeyError,
    Signature,
    _decode_base64,
    _is_valid_name,
    signature_line,
    split_note,
)
from nexus_contract.errors import NexusError

__all__ = [
    "COSIGNATURE_HEADER",
    "CosignatureError",
    "Cosigner",
    "CosignerKey",
    "VerifiedCosignature",
    "cosignature_key_id",
    "cosigned_message",
    "verified_cosignatures",
    "with_cosignatures",
]

COSIGNATURE_HEADER = "cosignature/v1"
_ALGORITHM = 0x04
_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_TIMESTAMP_SIZE = 8
_MAX_TIMESTAMP = 2**63 - 1
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class CosignatureError(NexusError):
    """A cosignature or a cosigner key string was rejected."""


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4], the cosigner's key ID."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ALGORITHM]) + public_key).digest()[:4]


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signature covers for a checkpoint's note text."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{note_text}".encode()


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key under its name (vkey type 0x04)."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not _is_valid_name(self.name):
            raise ValueError(f"cosigner name {self.name!r} is empty or holds a space or '+'")
        if len(self.public_key) != _KEY_SIZE:
            raise ValueError(f"Ed25519 public key is {len(self.public_key)} bytes, expected 32")

    @property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, vkey: str) -> Self:
        """Parse ``<name>+<hex key ID>+<base64(0x04 || key)>``; the key ID must match."""
        name, hex_id, raw = _split_key(vkey.strip(), "cosigner verifier key")
        try:
            key = cls(name, raw)
        except ValueError as exc:
            raise MalformedKeyError(f"cosigner verifier key: {exc}") from None
        if hex_id != key.key_id.hex():
            raise MalformedKeyError(
                f"cosigner key {name!r} carries key ID {hex_id} but its name and key give "
                f"{key.key_id.hex()} (cosignature keys use type 0x04)"
            )
        return key

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([_ALGORITHM]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, note_text: str, signature: bytes) -> int:
        """Check one cosignature over ``note_text``; return its timestamp, raise if it fails."""
        if len(signature) != _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
            raise CosignatureError(
                f"cosignature by {self.name} is {len(signature)} bytes, expected "
                f"{_TIMESTAMP_SIZE + _SIGNATURE_SIZE} (timestamp and Ed25519 signature)"
            )
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise CosignatureError(f"cosignature by {self.name} has an impossible timestamp")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature[_TIMESTAMP_SIZE:], cosigned_message(note_text, timestamp)
            )
        except InvalidSignature:
            raise CosignatureError(
                f"cosignature by witness {self.name} does not verify: the checkpoint was "
                "altered or the line was made by another key"
            ) from None
        return timestamp


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key (32-byte seed) under its name; never printed by repr."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _is_valid_name(self.name):
            raise ValueError(f"cosigner name {self.name!r} is empty or holds a space or '+'")
        if len(self.seed) != _KEY_SIZE:
            raise ValueError(f"Ed25519 seed is {len(self.seed)} bytes, expected 32")

    @classmethod
    def generate(cls, name: str) -> Self:
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, skey: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``."""
        skey = skey.strip()
        if not skey.startswith(_PRIVATE_PREFIX):
            raise MalformedKeyError("cosigner key must start with PRIVATE+KEY+")
        name, hex_id, raw = _split_key(skey[len(_PRIVATE_PREFIX) :], "cosigner key")
        try:
            cosigner = cls(name, raw)
        except ValueError as exc:
            raise MalformedKeyError(f"cosigner key: {exc}") from None
        if hex_id != cosigner.key.key_id.hex():
            raise MalformedKeyError(f"cosigner key {name!r}: key ID {hex_id} does not match")
        return cosigner

    @property
    def key(self) -> CosignerKey:
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return CosignerKey(self.name, public)

    def private_key_string(self) -> str:
        """The ``PRIVATE+KEY+...`` form. It is a secret: never log it."""
        encoded = base64.b64encode(bytes([_ALGORITHM]) + self.seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key.key_id.hex()}+{encoded}"

    def cosign(self, note_text: str, *, timestamp: int | None = None) -> str:
        """The cosignature line (newline included) over a checkpoint's ``note_text``."""
        moment = int(time.time()) if timestamp is None else timestamp
        if not 0 <= moment <= _MAX_TIMESTAMP:
            raise ValueError("cosignature timestamp out of range")
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        raw = moment.to_bytes(_TIMESTAMP_SIZE, "big") + private.sign(
            cosigned_message(note_text, moment)
        )
        return signature_line(Signature(self.name, self.key.key_id, raw))


@dataclass(frozen=True)
class VerifiedCosignature:
    """A cosignature that verified: who, when, and its note line."""

    key: CosignerKey
    timestamp: int
    line: str


def verified_cosignatures(
    note: str, cosigners: Iterable[CosignerKey]
) -> dict[str, VerifiedCosignature]:
    """The valid cosignatures on ``note`` by ``cosigners``, by cosigner name.

    Lines by unknown keys are ignored; a line by a known key that fails raises
    `CosignatureError` (a forged line is never silently skipped).
    """
    text, signatures = split_note(note)
    known = {(key.name, key.key_id): key for key in cosigners}
    found: dict[str, VerifiedCosignature] = {}
    for signature in signatures:
        key = known.get((signature.name, signature.key_id))
        if key is None:
            continue
        timestamp = key.verify(text, signature.signature)
        found[key.name] = VerifiedCosignature(key, timestamp, signature_line(signature))
    return found


def with_cosignatures(note: str, lines: Iterable[str]) -> str:
    """``note`` with cosignature ``lines`` appended, each once, after its own signatures."""
    present = set(note.splitlines(keepends=True))
    extra = [line for line in lines if line not in present]
    return note + "".join(dict.fromkeys(extra))


def _split_key(text: str, what: str) -> tuple[str, str, bytes]:
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise MalformedKeyError(f"{what} must be <name>+<hex key ID>+<base64 key>")
    name, hex_id, encoded = parts
    raw = _decode_base64(encoded)
    if raw is None or len(raw) != _KEY_SIZE + 1:
        raise MalformedKeyError(f"{what} {name!r}: key material is not base64 of 33 bytes")
    if raw[0] != _ALGORITHM:
        raise MalformedKeyError(
            f"{what} {name!r} has signature type 0x{raw[0]:02x}; cosignature keys are 0x04"
        )
    return name, hex_id, raw[1:]
