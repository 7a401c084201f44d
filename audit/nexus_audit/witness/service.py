"""The witness: cosign a log's checkpoint only if it extends the last one cosigned for that log.

Checks, in the order C2SP tlog-witness gives them: the origin is a log it
follows (else `UnknownLogError`, 404); the checkpoint is signed by that log's
key (`NoValidSignatureError`, 403); ``old`` is at most the new size
(`BadRequestError`, 400); ``old`` is the size it last cosigned
(`StaleSizeError`, 409 with that size); the consistency proof verifies
(`InvalidProofError`, 422); at equal sizes the roots agree (`ForkError`, 409).
The new state is persisted before the cosignature is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.cosignature import Cosigner
from nexus_audit.note import NoteError, Verifier
from nexus_audit.witness.protocol import AddCheckpoint
from nexus_audit.witness.state import Witnessed, WitnessStore
from nexus_contract.errors import NexusError

__all__ = [
    "BadRequestError",
    "ForkError",
    "InvalidProofError",
    "NoValidSignatureError",
    "StaleSizeError",
    "UnknownLogError",
    "Witness",
    "WitnessRefusedError",
]

log = logging.getLogger("nexus.witness")


class WitnessRefusedError(NexusError):
    """The witness will not cosign; ``status`` is the HTTP status tlog-witness prescribes."""

    status = 400


class BadRequestError(WitnessRefusedError):
    status = 400


class NoValidSignatureError(WitnessRefusedError):
    status = 403


class UnknownLogError(WitnessRefusedError):
    status = 404


class StaleSizeError(WitnessRefusedError):
    """``old`` is not the size last cosigned; ``size`` is that size."""

    status = 409

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class ForkError(WitnessRefusedError):
    """Same size as the last cosigned checkpoint, another root: the log forked."""

    status = 409


class InvalidProofError(WitnessRefusedError):
    status = 422


@dataclass(frozen=True)
class Witness:
    """A witness named ``cosigner.name`` following ``logs`` (origin → log key)."""

    cosigner: Cosigner
    logs: dict[str, Verifier]
    store: WitnessStore
    clock: Callable[[], float] | None = None

    @classmethod
    def following(
        cls, cosigner: Cosigner, logs: Iterable[Verifier], store: WitnessStore
    ) -> Witness:
        return cls(cosigner, {verifier.name: verifier for verifier in logs}, store)

    def add_checkpoint(self, request: AddCheckpoint) -> str:
        """Check and persist ``request``'s checkpoint; return the cosignature line(s)."""
        origin = request.note.split("\n", 1)[0]
        verifier = self.logs.get(origin)
        if verifier is None:
            raise UnknownLogError(f"this witness does not follow a log named {origin!r}")
        try:
            checkpoint = Checkpoint.open(request.note, verifier)
        except (NoteError, CheckpointError) as exc:
            raise NoValidSignatureError(
                f"the checkpoint is not signed by {origin}: {exc}"
            ) from None
        if request.old_size > checkpoint.size:
            raise BadRequestError(
                f"old size {request.old_size} is larger than the checkpoint's {checkpoint.size}"
            )

        def decide(current: Witnessed | None) -> Witnessed | None:
            known = 0 if current is None else current.size
            if request.old_size != known:
                raise StaleSizeError(
                    f"old size {request.old_size} is not the size last cosigned ({known})", known
                )
            if current is not None and checkpoint.size == current.size:
                if checkpoint.root_hash != current.root_hash:
                    log.critical(
                        "log forked: same size, another root",
                        extra={"origin": origin, "tree_size": checkpoint.size},
                    )
                    raise ForkError(
                        f"tree size {checkpoint.size} was cosigned with another root: the "
                        "log presents two histories"
                    )
                return None
            if current is not None:
                try:
                    merkle.verify_consistency(
                        current.size,
                        checkpoint.size,
                        request.proof,
                        current.root_hash,
                        checkpoint.root_hash,
                    )
                except merkle.MerkleError as exc:
                    log.critical(
                        "inconsistent checkpoint refused",
                        extra={"origin": origin, "tree_size": checkpoint.size},
                    )
                    raise InvalidProofError(
                        f"the consistency proof from {current.size} to {checkpoint.size} "
                        f"does not verify: {exc}"
                    ) from None
            return Witnessed(origin, checkpoint.size, checkpoint.root_hash, request.note)

        self.store.update(origin, decide)
        text = request.note[: request.note.rfind("\n\n") + 1]
        timestamp = None if self.clock is None else int(self.clock())
        return self.cosigner.cosign(text, timestamp=timestamp)
