"""Signs a C2SP checkpoint of the log every N leaves or T seconds, whichever comes first.

A checkpoint is only signed when the tree has grown since the last one, so
an idle log does not pile up identical checkpoints. Each is stored (keyed by
tree size) and served verbatim; signing the same size twice yields the same
note, because Ed25519 signatures are deterministic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.database import AuditDatabase
from nexus_audit.note import NoteError, Signer, Verifier
from nexus_audit.tables import CheckpointRow

__all__ = ["CheckpointSigner", "SignedCheckpoint"]

log = logging.getLogger("nexus.audit")

_MIN_TICK_S = 0.05
_OPENED_CACHE_SIZE = 256


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the signed note that carries it."""

    checkpoint: Checkpoint
    note: str
    created_at: datetime

    @property
    def size(self) -> int:
        return self.checkpoint.size


class CheckpointSigner:
    """Decides when to sign, signs, stores. Thread-safe; `run` is the timer loop."""

    def __init__(
        self,
        db: AuditDatabase,
        signer: Signer,
        *,
        every_leaves: int,
        every_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if every_leaves < 1 or every_s <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self._db = db
        self._signer = signer
        self._verifier = signer.verifier
        self._every_leaves = every_leaves
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.RLock()
        self._latest: SignedCheckpoint | None = None
        self._opened: dict[int, SignedCheckpoint] = {}
        self._loaded = False

    @property
    def origin(self) -> str:
        """The log's origin: the signing key's name."""
        return self._signer.name

    def latest(self, session: Session | None = None) -> SignedCheckpoint | None:
        """The newest stored checkpoint (from any process sharing the database).

        Reads in ``session`` when given, else in a session of its own.
        """
        if session is None:
            with self._db.session() as own:
                return self.latest(own)
        row = storage.latest_checkpoint(session)
        latest = None if row is None else self._open(row)
        with self._lock:
            if latest is not None and (self._latest is None or latest.size > self._latest.size):
                self._latest = latest
            self._loaded = True
            return self._latest

    def at(self, size: int, session: Session | None = None) -> SignedCheckpoint | None:
        """The stored checkpoint of tree ``size``, if one was signed."""
        if session is None:
            with self._db.session() as own:
                return self.at(size, own)
        row = storage.checkpoint_at(session, size)
        return None if row is None else self._open(row)

    def _open(self, row: CheckpointRow) -> SignedCheckpoint:
        """A stored checkpoint opened with the log key; notes already opened are remembered."""
        with self._lock:
            known = self._opened.get(row.size)
        if (
            known is not None
            and known.note == row.note
            and known.checkpoint.root_hash == row.root_hash
        ):
            return known
        signed = _signed(row, self._verifier)
        with self._lock:
            if len(self._opened) >= _OPENED_CACHE_SIZE:
                self._opened.pop(next(iter(self._opened)))
            self._opened[row.size] = signed
        return signed

    def checkpoint(self) -> SignedCheckpoint:
        """Sign the tree as it is now, unless the latest checkpoint already covers it."""
        with self._lock:
            return self._sign_current()

    def maybe_checkpoint(self, size: int | None = None) -> SignedCheckpoint | None:
        """Sign if the tree grew by `every_leaves` or `every_s` passed since the last one.

        ``size`` is the tree size the caller just saw (saves a query after an append).
        """
        if not self._loaded:
            self.latest()
        with self._lock:
            if size is None:
                with self._db.session() as session:
                    size = storage.tree_size(session)
            last = self._latest
            last_size = 0 if last is None else last.size
            if size <= last_size and last is not None:
                return None
            grown = size - last_size
            elapsed = (
                float("inf") if last is None else (self._clock() - last.created_at).total_seconds()
            )
            if grown >= self._every_leaves or elapsed >= self._every_s:
                return self._sign_current()
            return None

    def run(self, stop: threading.Event) -> None:
        """Check the time rule until ``stop`` is set; errors are logged and retried."""
        tick = max(_MIN_TICK_S, min(1.0, self._every_s / 4))
        while not stop.wait(tick):
            try:
                self.maybe_checkpoint()
            except Exception:
                log.exception("checkpoint failed; will retry")

    def _sign_current(self) -> SignedCheckpoint:
        with self._db.session() as session:
            size = storage.tree_size(session)
            if self._latest is not None and self._latest.size >= size:
                return self._latest
            existing = storage.checkpoint_at(session, size)
            if existing is not None:
                signed = self._open(existing)
            else:
                root = storage.root_hash(session, size)
                checkpoint = Checkpoint(self._signer.name, size, root)
                now = self._clock()
                note = checkpoint.sign(self._signer)
                storage.save_checkpoint(session, size, root, note, now=now)
                signed = SignedCheckpoint(checkpoint, note, now)
        log.info(
            "checkpoint signed",
            extra={"tree_size": signed.size, "root_hash": signed.checkpoint.root_hash.hex()},
        )
        self._latest = signed
        self._loaded = True
        return signed


def _signed(row: CheckpointRow, verifier: Verifier) -> SignedCheckpoint:
    """A stored checkpoint, opened with the log's key: a row altered in the database is refused."""
    try:
        checkpoint = Checkpoint.open(row.note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise storage.CorruptStorageError(
            f"stored checkpoint of size {row.size} does not open with the log key: {exc}"
        ) from None
    if checkpoint.size != row.size or checkpoint.root_hash != row.root_hash:
        raise storage.CorruptStorageError(
            f"stored checkpoint of size {row.size}: its note says size {checkpoint.size} "
            f"and root {checkpoint.root_hash.hex()}, its columns {row.root_hash.hex()}"
        )
    return SignedCheckpoint(checkpoint, row.note, storage.as_utc(row.created_at))
