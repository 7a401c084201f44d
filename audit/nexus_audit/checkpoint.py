"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): a signed Merkle tree head.

A checkpoint is a signed note (see `nexus_audit.note`) whose text is exactly

    <origin>\\n
    <tree size, ASCII decimal, no leading zeroes>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]

The only way from note text to a `Checkpoint` is `Checkpoint.open`, which
verifies the signature first: an unverified checkpoint is never handed out.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Self

from nexus_audit.merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE
from nexus_audit.note import Signer, Verifier, _decode_base64, open_note, sign_note
from nexus_contract.errors import NexusError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "MalformedCheckpointError",
    "OriginMismatchError",
]

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x1f]")


class CheckpointError(NexusError):
    """A checkpoint's body was rejected (signature failures raise `note.NoteError`)."""


class MalformedCheckpointError(CheckpointError):
    """The note text is not a tlog-checkpoint body; the message names the line."""


class OriginMismatchError(CheckpointError):
    """The checkpoint is validly signed but for a log other than the one expected."""


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log ``origin`` had ``size`` leaves with root ``root_hash``.

    Invariants: ``origin`` and every extension are non-empty single lines with
    no control characters; ``0 <= size <= MAX_TREE_SIZE``; ``root_hash`` is 32
    bytes, and is `EMPTY_ROOT` when ``size`` is 0.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        for position, extension in enumerate(self.extensions):
            _check_line(f"extension line {position}", extension)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {self.size} is outside 0..{MAX_TREE_SIZE}")
        if len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"root hash is {len(self.root_hash)} bytes, expected {HASH_SIZE}")
        if self.size == 0 and self.root_hash != EMPTY_ROOT:
            raise ValueError("a checkpoint of size 0 must carry the empty-tree root")

    @property
    def text(self) -> str:
        """The note text: the exact bytes a signature covers."""
        root = base64.b64encode(self.root_hash).decode()
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    def sign(self, signer: Signer) -> str:
        """Return this checkpoint as a signed note. The key name SHOULD equal ``origin``."""
        return sign_note(self.text, signer)

    @classmethod
    def open(
        cls,
        note: str | bytes,
        verifier: Verifier,
        *,
        origin: str | None = None,
        first_line: int = 1,
    ) -> Self:
        """Verify ``note`` with the log key ``verifier`` and return its checkpoint.

        The checkpoint's origin must equal ``origin``, which defaults to the
        key's name (the C2SP recommendation). Other signatures, e.g. witness
        cosignatures, are ignored. Raises `nexus_audit.note.NoteError`
        subclasses for the signature, `MalformedCheckpointError` for the body,
        `OriginMismatchError` for the log. ``first_line`` numbers lines in errors
        when the note sits inside a larger document.
        """
        verified = open_note(note, [verifier], first_line=first_line)
        checkpoint = cls._parse(verified.text, first_line)
        expected = verifier.name if origin is None else origin
        if checkpoint.origin != expected:
            raise OriginMismatchError(
                f"line {first_line}: checkpoint is for log {checkpoint.origin!r}, "
                f"expected {expected!r}"
            )
        return checkpoint

    @classmethod
    def _parse(cls, text: str, first_line: int) -> Self:
        lines = text[:-1].split("\n")
        for offset, line in enumerate(lines):
            if not line:
                raise MalformedCheckpointError(
                    f"line {first_line + offset}: checkpoint lines must not be empty"
                )
        if len(lines) < 3:
            raise MalformedCheckpointError(
                f"line {first_line + len(lines)}: a checkpoint needs origin, tree size "
                f"and root hash lines, found {len(lines)} line(s)"
            )
        origin, size_text, root_text, *extensions = lines
        size = _parse_size(size_text, first_line + 1)
        root_hash = _parse_root(root_text, first_line + 2)
        try:
            return cls(origin, size, root_hash, tuple(extensions))
        except ValueError as error:
            raise MalformedCheckpointError(f"line {first_line + 2}: {error}") from None


def _parse_size(text: str, line: int) -> int:
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_TREE_SIZE:
        raise MalformedCheckpointError(
            f"line {line}: tree size {text!r} is not a decimal in 0..{MAX_TREE_SIZE} "
            "without leading zeroes"
        )
    return int(text)


def _parse_root(text: str, line: int) -> bytes:
    root = _decode_base64(text)
    if root is None or len(root) != HASH_SIZE:
        raise MalformedCheckpointError(
            f"line {line}: root hash {text!r} is not canonical base64 of {HASH_SIZE} bytes"
        )
    return root


def _check_line(what: str, value: str) -> None:
    if not value or _CONTROL.search(value):
        raise ValueError(f"{what} must be a non-empty line without control characters")
