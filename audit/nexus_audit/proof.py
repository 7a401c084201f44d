"""C2SP tlog-proof (https://c2sp.org/tlog-proof): an offline-verifiable inclusion proof.

The text form, lines separated by ``\\n``:

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>          (optional; never trusted)
    index <decimal leaf index, no leading zeroes>
    <base64 proof hash>                 (zero or more, leaf's sibling first)

    <signed checkpoint note, verbatim>

`TlogProof.parse` checks the proof lines strictly and keeps the checkpoint
note verbatim; the note's syntax, signatures and body are checked by
`TlogProof.verify`, whose errors number lines within the whole proof.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Self

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.note import Verifier, _decode_base64
from nexus_contract.errors import NexusError

__all__ = ["HEADER", "MalformedProofError", "ProofError", "TlogProof"]

HEADER = "c2sp.org/tlog-proof@v1"
"""First line of every tlog-proof."""

_MAX_PROOF_HASHES = 64
"""A tree of at most 2**64 - 1 leaves has inclusion proofs of at most 64 hashes."""

_EXTRA_PREFIX = "extra "
_INDEX_LINE = re.compile(r"index (0|[1-9][0-9]{0,19})")


class ProofError(NexusError):
    """A tlog-proof was rejected before its checkpoint or Merkle proof was checked."""


class MalformedProofError(ProofError):
    """The text is not a tlog-proof; the message names the line."""


@dataclass(frozen=True)
class TlogProof:
    """Inclusion proof of leaf ``index`` under a signed ``checkpoint`` note.

    Invariants: ``0 <= index <= MAX_TREE_SIZE``; at most 64 hashes of 32 bytes;
    ``checkpoint`` is non-empty and ends with a newline. ``extra`` is opaque,
    unauthenticated data (empty when absent).
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.index <= merkle.MAX_TREE_SIZE:
            raise ValueError(f"leaf index {self.index} is outside 0..{merkle.MAX_TREE_SIZE}")
        if len(self.hashes) > _MAX_PROOF_HASHES:
            raise ValueError(f"{len(self.hashes)} proof hashes, at most {_MAX_PROOF_HASHES}")
        for position, value in enumerate(self.hashes):
            if len(value) != merkle.HASH_SIZE:
                raise ValueError(f"proof hash {position} is {len(value)} bytes, expected 32")
        if not self.checkpoint.endswith("\n"):
            raise ValueError("the checkpoint note must be non-empty and end with a newline")

    def encode(self) -> str:
        """Return the tlog-proof text; `parse` maps it back to an equal `TlogProof`."""
        lines = [HEADER]
        if self.extra:
            lines.append(_EXTRA_PREFIX + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(value).decode() for value in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        """Parse tlog-proof text; raise `MalformedProofError` naming the offending line."""
        if isinstance(text, bytes):
            raw = text
            try:
                text = raw.decode()
            except UnicodeDecodeError as error:
                bad_line = raw.count(b"\n", 0, error.start) + 1
                raise MalformedProofError(f"line {bad_line}: proof is not valid UTF-8") from None
        lines = text.split("\n")
        if lines[0] != HEADER:
            raise MalformedProofError(f"line 1: expected {HEADER!r}, found {lines[0][:64]!r}")
        number = 2
        extra = b""
        if _line(lines, number).startswith(_EXTRA_PREFIX):
            decoded = _decode_base64(lines[number - 1][len(_EXTRA_PREFIX) :])
            if not decoded:
                raise MalformedProofError(
                    f"line {number}: extra data is not non-empty canonical base64"
                )
            extra = decoded
            number += 1
        index_match = _INDEX_LINE.fullmatch(_line(lines, number))
        if index_match is None:
            raise MalformedProofError(
                f"line {number}: expected 'index <n>', n a decimal of at most 20 digits "
                "without leading zeroes"
            )
        index = int(index_match.group(1))
        if index > merkle.MAX_TREE_SIZE:
            raise MalformedProofError(
                f"line {number}: index {index} exceeds the largest tree size {merkle.MAX_TREE_SIZE}"
            )
        number += 1
        hashes: list[bytes] = []
        while (line := _line(lines, number)) != "":
            value = _decode_base64(line)
            if value is None or len(value) != merkle.HASH_SIZE:
                raise MalformedProofError(
                    f"line {number}: proof hash is not canonical base64 of 32 bytes"
                )
            if len(hashes) == _MAX_PROOF_HASHES:
                raise MalformedProofError(
                    f"line {number}: more than {_MAX_PROOF_HASHES} proof hashes"
                )
            hashes.append(value)
            number += 1
        checkpoint = "\n".join(lines[number:])
        if not checkpoint.endswith("\n"):
            raise MalformedProofError(
                f"line {number + 1}: expected a signed checkpoint ending with a newline"
            )
        return cls(index, tuple(hashes), checkpoint, extra)

    def verify(
        self,
        verifier: Verifier,
        *,
        leaf: bytes | None = None,
        leaf_hash: bytes | None = None,
        origin: str | None = None,
    ) -> Checkpoint:
        """Check that ``leaf`` (or its ``leaf_hash``) is leaf ``index`` of the signed tree.

        Give exactly one of ``leaf`` and ``leaf_hash``. The checkpoint must be
        signed by ``verifier`` for ``origin`` (default: the key's name). Returns
        the verified checkpoint; raises `nexus_audit.note.NoteError`,
        `nexus_audit.checkpoint.CheckpointError` or `nexus_audit.merkle.MerkleError`
        subclasses, never returns on failure.
        """
        if leaf is not None and leaf_hash is None:
            digest = merkle.leaf_hash(leaf)
        elif leaf_hash is not None and leaf is None:
            digest = leaf_hash
        else:
            raise TypeError("give exactly one of leaf= and leaf_hash=")
        checkpoint = Checkpoint.open(
            self.checkpoint, verifier, origin=origin, first_line=self._checkpoint_first_line
        )
        merkle.verify_inclusion(
            digest, self.index, checkpoint.size, self.hashes, checkpoint.root_hash
        )
        return checkpoint

    @property
    def _checkpoint_first_line(self) -> int:
        header_lines = 3 if self.extra else 2
        return header_lines + len(self.hashes) + 2


def _line(lines: list[str], number: int) -> str:
    """Line ``number`` (1-based); raises if the text ended before it."""
    if number > len(lines):
        raise MalformedProofError(f"line {number}: the proof ends too early")
    return lines[number - 1]
