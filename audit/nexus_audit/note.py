"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys.

A signed note is a text ending in a newline, a blank line, then one or more
signature lines ``— <key name> <base64(key ID || signature)>`` (em dash,
U+2014). The text is everything before the *last* blank line, including its
final newline; that is exactly what every signature covers.

A key is the pair (name, key ID), with key ID =
SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4] for Ed25519 (type 0x01).
Key strings follow the Go ``golang.org/x/mod/sumdb/note`` forms:

    verifier  <name>+<hex key ID>+<base64(0x01 || public key)>
    signer    PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>

Opening a note is all-or-nothing: `open_note` returns a `VerifiedNote` only if
at least one signature by a known key verifies and none by a known key fails;
signatures by unknown keys (even those sharing a known key's name *or* ID) are
ignored and kept. Base64 must be canonical (standard alphabet, padded, zero
trailing bits), so each signature has exactly one encoding.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nexus_contract.errors import NexusError

__all__ = [
    "MAX_SIGNATURES",
    "AmbiguousVerifierError",
    "InvalidSignatureError",
    "KeyIdMismatchError",
    "MalformedKeyError",
    "MalformedNoteError",
    "NoteError",
    "Signature",
    "Signer",
    "UnsupportedKeyTypeError",
    "UnverifiedNoteError",
    "VerifiedNote",
    "Verifier",
    "key_id",
    "open_note",
    "sign_note",
    "signature_line",
    "split_note",
]

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec asks verifiers to accept 16 or more)."""

_ED25519 = 0x01
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
_SIGNATURE_PREFIX = "\u2014 "
_PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(NexusError):
    """A signed note or a note key was rejected."""


class MalformedNoteError(NoteError):
    """A note breaks the signed-note syntax; the message names the line."""


class MalformedKeyError(NoteError):
    """A verifier or signer key string is not in the expected form."""


class UnsupportedKeyTypeError(MalformedKeyError):
    """A key string names a signature type other than Ed25519 (0x01)."""


class KeyIdMismatchError(MalformedKeyError):
    """A key string's hex key ID is not the one its name and key derive."""


class AmbiguousVerifierError(NoteError):
    """Two different verifier keys share one (name, key ID), so a signature is ambiguous."""


class InvalidSignatureError(NoteError):
    """A signature by a known key does not verify; the whole note is refused."""


class UnverifiedNoteError(NoteError):
    """No signature in the note is by a known key."""


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    _check_name(name)
    if len(public_key) != _ED25519_KEY_SIZE:
        raise ValueError(f"Ed25519 public key is {len(public_key)} bytes, expected 32")
    material = name.encode() + b"\n" + bytes([_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:_KEY_ID_SIZE]


@dataclass(frozen=True)
class Signature:
    """One signature line: by key (``name``, ``key_id``), ``signature`` without the ID prefix."""

    name: str
    key_id: bytes
    signature: bytes

    def _line(self) -> str:
        encoded = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 public key under a name; invariant: ``name`` is a valid key name."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise ValueError(f"Ed25519 public key is {len(self.public_key)} bytes, expected 32")

    @classmethod
    def parse(cls, vkey: str) -> Self:
        """Parse ``<name>+<hex key ID>+<base64(0x01 || public key)>``; the ID must match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise MalformedKeyError(
                "verifier key must be <name>+<hex key ID>+<base64 key>, "
                f"found {len(parts)} '+'-separated part(s)"
            )
        name, hex_id, encoded = parts
        try:
            verifier = cls(name, _decode_key_material(encoded, "verifier"))
        except ValueError as error:
            raise MalformedKeyError(f"verifier key: {error}") from None
        _check_key_id(hex_id, verifier.key_id, name, "verifier")
        return verifier

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID naming this key in signature lines."""
        return key_id(self.name, self.public_key)

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def _accepts(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key (32-byte RFC 8032 seed) under a name; never printed by repr."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.seed) != _ED25519_KEY_SIZE:
            raise ValueError(f"Ed25519 seed is {len(self.seed)} bytes, expected 32")

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a signer with a fresh random key."""
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(name, seed)

    @classmethod
    def parse(cls, skey: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``; the ID must match."""
        if not skey.startswith(_PRIVATE_KEY_PREFIX):
            raise MalformedKeyError("signer key must start with PRIVATE+KEY+")
        parts = skey[len(_PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise MalformedKeyError(
                "signer key must be PRIVATE+KEY+<name>+<hex key ID>+<base64 key>, "
                f"found {len(parts)} '+'-separated part(s) after the prefix"
            )
        name, hex_id, encoded = parts
        try:
            signer = cls(name, _decode_key_material(encoded, "signer"))
        except ValueError as error:
            raise MalformedKeyError(f"signer key: {error}") from None
        _check_key_id(hex_id, signer.verifier.key_id, name, "signer")
        return signer

    @property
    def verifier(self) -> Verifier:
        """The public half of this key, under the same name."""
        public_key = self._private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, public_key)

    def private_key_string(self) -> str:
        """Return the ``PRIVATE+KEY+...`` form. It is a secret: never log it."""
        encoded = base64.b64encode(bytes([_ED25519]) + self.seed).decode()
        return f"{_PRIVATE_KEY_PREFIX}{self.name}+{self.verifier.key_id.hex()}+{encoded}"

    def _private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def _sign(self, message: bytes) -> Signature:
        return Signature(self.name, self.verifier.key_id, self._private_key().sign(message))


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose ``signatures`` all verified under known keys (at least one).

    ``unverified`` holds signatures by keys the caller did not supply, kept so
    the note can be passed on (e.g. to a witness); they prove nothing.
    """

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def sign_note(text: str, *signers: Signer) -> str:
    """Return ``text`` signed by every signer, in order, as a signed note.

    ``text`` must end in a newline and hold no control characters but newline.
    """
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    control = _FORBIDDEN_CONTROL.search(text)
    if control:
        raise ValueError(
            f"note text holds control character {control.group()!r} at offset {control.start()}"
        )
    if not signers:
        raise ValueError("a note needs at least one signer")
    message = text.encode()
    signatures = [signer._sign(message) for signer in signers]
    keys = [(signature.name, signature.key_id) for signature in signatures]
    if len(set(keys)) != len(keys):
        raise ValueError("the same key is listed twice among the signers")
    return text + "\n" + "".join(signature._line() for signature in signatures)


def open_note(
    note: str | bytes, verifiers: Iterable[Verifier], *, first_line: int = 1
) -> VerifiedNote:
    """Parse ``note`` and verify it against ``verifiers``; return it only if it verifies.

    Raises `MalformedNoteError` (syntax, with line number), `AmbiguousVerifierError`,
    `InvalidSignatureError` (a known key's signature fails) or
    `UnverifiedNoteError` (no known key signed). ``first_line`` is the line
    number of the note's first line when it is embedded in a larger document.
    """
    known = _index_verifiers(verifiers)
    text, signed = _parse(note, first_line)
    message = text.encode()
    verified: list[Signature] = []
    unverified: list[Signature] = []
    for line_number, signature in signed:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            unverified.append(signature)
        elif verifier._accepts(message, signature.signature):
            verified.append(signature)
        else:
            raise InvalidSignatureError(
                f"line {line_number}: signature by key {signature.name!r} "
                f"(ID {signature.key_id.hex()}) does not verify; the note was altered "
                "or signed by another key"
            )
    if not verified:
        seen = sorted({f"{s.name} ({s.key_id.hex()})" for s in unverified})
        wanted = sorted(f"{v.name} ({v.key_id.hex()})" for v in known.values())
        raise UnverifiedNoteError(
            f"note is signed only by unknown keys {seen}; expected a signature by one of {wanted}"
        )
    return VerifiedNote(text, tuple(verified), tuple(unverified))


def split_note(note: str | bytes, *, first_line: int = 1) -> tuple[str, tuple[Signature, ...]]:
    """The text and the signature lines of ``note``, checking syntax only (nothing verified).

    For callers that verify signatures of another kind (witness cosignatures)
    over the same text; raises `MalformedNoteError`.
    """
    text, signed = _parse(note, first_line)
    return text, tuple(signature for _, signature in signed)


def signature_line(signature: Signature) -> str:
    """The note signature line of ``signature``, newline included."""
    return signature._line()


def _parse(note: str | bytes, first_line: int) -> tuple[str, list[tuple[int, Signature]]]:
    """Split a note into its text and numbered signatures, checking syntax only."""
    if isinstance(note, bytes):
        raw = note
        try:
            note = raw.decode()
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + first_line
            raise MalformedNoteError(
                f"line {line}: note is not valid UTF-8 (byte offset {error.start})"
            ) from None
    control = _FORBIDDEN_CONTROL.search(note)
    if control:
        line = note.count("\n", 0, control.start()) + first_line
        raise MalformedNoteError(
            f"line {line}: control character {control.group()!r} is not allowed in a note"
        )
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError(
            f"line {first_line}: no blank line separates the note text from its signatures"
        )
    text, block = note[: split + 1], note[split + 2 :]
    line_number = first_line + text.count("\n") + 1
    if not block:
        raise MalformedNoteError(f"line {line_number}: no signature lines follow the blank line")
    if not block.endswith("\n"):
        last_line = line_number + block.count("\n")
        raise MalformedNoteError(
            f"line {last_line}: the last signature line does not end with a newline"
        )
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"line {line_number}: {len(lines)} signature lines, at most {MAX_SIGNATURES} accepted"
        )
    signatures = [
        (number, _parse_signature_line(line, number))
        for number, line in enumerate(lines, start=line_number)
    ]
    return text, signatures


def _parse_signature_line(line: str, number: int) -> Signature:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise MalformedNoteError(
            f"line {number}: signature lines must start with an em dash (U+2014) and a space"
        )
    fields = line[len(_SIGNATURE_PREFIX) :].split(" ")
    if len(fields) != 2:
        raise MalformedNoteError(
            f"line {number}: signature line must be '\u2014 <key name> <base64 signature>'"
        )
    name, encoded = fields
    if not _is_valid_name(name):
        raise MalformedNoteError(
            f"line {number}: key name {name!r} is empty or holds a space or '+'"
        )
    raw = _decode_base64(encoded)
    if raw is None or len(raw) <= _KEY_ID_SIZE:
        raise MalformedNoteError(
            f"line {number}: signature of key {name!r} is not canonical base64 "
            "of a 4-byte key ID and a signature"
        )
    return Signature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def _index_verifiers(verifiers: Iterable[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if known.setdefault(key, verifier) != verifier:
            raise AmbiguousVerifierError(
                f"two different keys are named {verifier.name!r} with key ID "
                f"{verifier.key_id.hex()}; keep only the one you trust"
            )
    return known


def _decode_key_material(encoded: str, kind: str) -> bytes:
    raw = _decode_base64(encoded)
    if raw is None or not raw:
        raise MalformedKeyError(f"{kind} key material is not canonical base64")
    if raw[0] != _ED25519:
        raise UnsupportedKeyTypeError(
            f"{kind} key has signature type 0x{raw[0]:02x}; only Ed25519 (0x01) is supported"
        )
    return raw[1:]


def _check_key_id(hex_id: str, expected: bytes, name: str, kind: str) -> None:
    if not _KEY_ID_HEX.fullmatch(hex_id):
        raise MalformedKeyError(f"{kind} key {name!r}: key ID {hex_id!r} is not 8 lowercase hex")
    if bytes.fromhex(hex_id) != expected:
        raise KeyIdMismatchError(
            f"{kind} key {name!r} carries key ID {hex_id} but its name and key give "
            f"{expected.hex()}; the string was altered or the name changed"
        )


def _check_name(name: str) -> None:
    if not _is_valid_name(name):
        raise ValueError(f"key name {name!r} is empty or holds a space, '+' or control character")


def _is_valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(char.isspace() or char < " " for char in name)


def _decode_base64(encoded: str) -> bytes | None:
    """Decode canonical standard base64 (RFC 4648 section 4); ``None`` if not canonical.

    Shared by the checkpoint and tlog-proof parsers, which follow the same rule.
    """
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode() == encoded else None
