"""The ``add-checkpoint`` request body of C2SP tlog-witness, and its answers.

    old <size>\\n
    <base64 consistency proof hash>\\n      (0 to 63 lines; none when old is 0)
    \\n
    <signed checkpoint note>

A 200 answer is one or more cosignature lines; a 409 answer for a stale size
is ``<size>\\n`` with ``Content-Type: text/x.tlog.size``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Self

from nexus_audit.merkle import HASH_SIZE
from nexus_audit.note import _decode_base64
from nexus_contract.errors import NexusError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROOF_LINES",
    "SIZE_MEDIA_TYPE",
    "AddCheckpoint",
    "WitnessProtocolError",
    "parse_size_body",
]

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 16 * 1024
SIZE_MEDIA_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


class WitnessProtocolError(NexusError):
    """A tlog-witness message is malformed; the message says which line."""


@dataclass(frozen=True)
class AddCheckpoint:
    """``old_size``, the consistency ``proof`` from it, and the signed checkpoint ``note``."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}", *(base64.b64encode(h).decode() for h in self.proof)]
        return ("\n".join(lines) + "\n\n" + self.note).encode()

    @classmethod
    def parse(cls, body: bytes) -> Self:
        if len(body) > MAX_BODY_BYTES:
            raise WitnessProtocolError(f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise WitnessProtocolError("the body is not UTF-8") from None
        head, separator, note = text.partition("\n\n")
        if not separator:
            raise WitnessProtocolError("no empty line separates the proof from the checkpoint")
        lines = head.split("\n")
        match = _OLD.fullmatch(lines[0])
        if match is None:
            raise WitnessProtocolError("line 1: expected 'old <size>' without leading zeroes")
        old_size = int(match.group(1))
        if old_size > 2**64 - 1:
            raise WitnessProtocolError("line 1: the old size exceeds 2**64 - 1")
        proof = []
        for number, line in enumerate(lines[1:], start=2):
            value = _decode_base64(line)
            if value is None or len(value) != HASH_SIZE:
                raise WitnessProtocolError(f"line {number}: not canonical base64 of a hash")
            proof.append(value)
        if len(proof) > MAX_PROOF_LINES:
            raise WitnessProtocolError(f"more than {MAX_PROOF_LINES} consistency proof lines")
        if old_size == 0 and proof:
            raise WitnessProtocolError("the proof must be empty when the old size is 0")
        if not note.endswith("\n"):
            raise WitnessProtocolError("the checkpoint must end with a newline")
        return cls(old_size, tuple(proof), note)


def parse_size_body(body: bytes) -> int:
    """The size in a 409 answer (``<decimal>\\n``)."""
    text = body.decode(errors="replace")
    if not text.endswith("\n") or not text[:-1].isdigit():
        raise WitnessProtocolError(f"a stale-size answer must be '<size>\\n', got {text[:40]!r}")
    return int(text[:-1])
