"""Signs a C2SP checkpoint of the log every N leaves or T seconds, each proven to extend the last.

A checkpoint is only signed when the tree has grown since the last one, so
an idle log does not pile up identical checkpoints. Before a new checkpoint is
signed, the tree it covers is proven consistent (RFC 9162) with the newest
checkpoint on record *outside the database*, the checkpoint journal
(`nexus_audit.journal`); the journal gets the new note before the database
does. A tree rewritten with database access alone (leaves changed, ``nodes``
rebuilt, the covering checkpoints deleted) fails that proof, and the log
refuses to sign anything until the tree is restored: `CheckpointChainError`.

With several replicas on one PostgreSQL database, exactly one signs: the
holder of the signer lease (`nexus_audit.service`, `nexus_runtime.lease`).
The others `stand_by`: they append leaves but never sign, and an on-demand
`checkpoint` there waits for the holder's next one (`SignerUnavailableError`
if none comes). A replica that takes the lease over (`take_over`) re-reads its
journal and proves the database's newest checkpoint, signed by the previous
holder, extends the journal's newest before it appends that checkpoint to its
journal and signs on: each journal is one chain with the database's.

Each checkpoint is stored (keyed by tree size) and served verbatim; signing
the same size twice yields the same note, because Ed25519 signatures are
deterministic. Witness cosignatures, once collected (`nexus_audit.witnessing`),
are kept beside the note (``cosigned_note``) and appended to the journal too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from nexus_audit import merkle, storage
from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.database import AuditDatabase
from nexus_audit.journal import CheckpointJournal
from nexus_audit.note import NoteError, Signer, Verifier
from nexus_audit.tables import CheckpointRow
from nexus_contract.errors import NexusError

__all__ = [
    "CheckpointChainError",
    "CheckpointSigner",
    "SignedCheckpoint",
    "SignerUnavailableError",
]

log = logging.getLogger("nexus.audit")

_MIN_TICK_S = 0.05
_OPENED_CACHE_SIZE = 256
_STANDBY_POLL_S = 0.05
STANDBY_WAIT_MIN_S = 5.0
STANDBY_WAIT_MAX_S = 30.0
"""How long a standby replica's on-demand `CheckpointSigner.checkpoint` waits for the
holder to sign one covering the tree: twice the time rule, within these bounds."""


class CheckpointChainError(NexusError):
    """The tree does not extend the last checkpoint on record: the log was rewritten or cut."""


class SignerUnavailableError(NexusError):
    """This replica does not sign and the replica that does signed nothing in time."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint, the signed note that carries it, and that note with cosignatures."""

    checkpoint: Checkpoint
    note: str
    created_at: datetime
    cosigned_note: str | None = None

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def published_note(self) -> str:
        """What is served and exported: the cosigned note once there is one."""
        return self.cosigned_note or self.note


class CheckpointSigner:
    """Decides when to sign, proves the chain, signs, stores. Thread-safe; `run` is the timer."""

    def __init__(
        self,
        db: AuditDatabase,
        signer: Signer,
        journal: CheckpointJournal,
        *,
        every_leaves: int,
        every_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_signed: Callable[[SignedCheckpoint], None] | None = None,
        on_chain_error: Callable[[CheckpointChainError], None] | None = None,
    ) -> None:
        if every_leaves < 1 or every_s <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self._db = db
        self._signer = signer
        self._verifier = signer.verifier
        self.journal = journal
        self._every_leaves = every_leaves
        self._every_s = every_s
        self._clock = clock
        self._on_signed = on_signed
        self._on_chain_error = on_chain_error
        self._lock = threading.RLock()
        self._latest: SignedCheckpoint | None = None
        self._opened: dict[int, SignedCheckpoint] = {}
        self._loaded = False
        self._standby = False

    @property
    def signing(self) -> bool:
        """False while another replica holds the signer lease (this one stands by)."""
        return not self._standby

    def stand_by(self) -> None:
        """Stop signing: another replica (the lease holder) signs; `take_over` resumes."""
        with self._lock:
            self._standby = True

    def take_over(self) -> SignedCheckpoint:
        """Become the signer: re-read the journal, prove the chain, sign the tree as it is.

        Raises `CheckpointChainError` if the database's newest checkpoint does not
        extend this replica's journal (the signer then keeps refusing, as on one host).
        """
        with self._lock:
            self.journal.reload()
            self._latest = None
            self._loaded = False
            self._opened.clear()
            self._standby = False
            return self._sign_current()

    @property
    def origin(self) -> str:
        """The log's origin: the signing key's name."""
        return self._signer.name

    def latest(self, session: Session | None = None) -> SignedCheckpoint | None:
        """The newest stored checkpoint (from any process sharing the database)."""
        if session is None:
            with self._db.session() as own:
                return self.latest(own)
        row = storage.latest_checkpoint(session)
        latest = None if row is None else self._open(row)
        with self._lock:
            if latest is not None and (
                self._latest is None
                or latest.size > self._latest.size
                or (latest.size == self._latest.size and latest.cosigned_note)
            ):
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
            and known.cosigned_note == row.cosigned_note
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
        """Sign the tree as it is now, unless the latest checkpoint already covers it.

        On a standby replica: wait for the signer's checkpoint covering the tree.
        """
        with self._lock:
            if not self._standby:
                return self._sign_current()
        return self._await_signed()

    def _await_signed(self) -> SignedCheckpoint:
        with self._db.session() as session:
            size = storage.tree_size(session)
        wait_s = min(max(2 * self._every_s, STANDBY_WAIT_MIN_S), STANDBY_WAIT_MAX_S)
        deadline = time.monotonic() + wait_s
        while True:
            latest = self.latest()
            if latest is not None and latest.size >= size:
                return latest
            if time.monotonic() >= deadline:
                raise SignerUnavailableError(
                    f"no checkpoint covering {size} leaves was signed within {wait_s:g} s; "
                    "this replica does not hold the signer lease and the holder did not sign"
                )
            time.sleep(_STANDBY_POLL_S)

    def maybe_checkpoint(self, size: int | None = None) -> SignedCheckpoint | None:
        """Sign if the tree grew by `every_leaves` or `every_s` passed since the last one."""
        if self._standby:
            return None
        if not self._loaded:
            self.latest()
        with self._lock:
            if self._standby:
                return None
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
            except CheckpointChainError:
                pass  # reported once per attempt by _sign_current
            except Exception:
                log.exception("checkpoint failed; will retry")

    def record_cosigned(self, signed: SignedCheckpoint, cosigned_note: str) -> SignedCheckpoint:
        """Keep ``cosigned_note`` (the note plus cosignature lines) for ``signed``'s size."""
        opened = _open_note(cosigned_note, self._verifier, signed.size)
        if opened.root_hash != signed.checkpoint.root_hash:
            raise CheckpointChainError(
                f"cosigned note of size {signed.size} carries another root than the log signed"
            )
        self.journal.append(signed.size, cosigned_note)
        with self._db.session() as session:
            session.execute(
                update(CheckpointRow)
                .where(CheckpointRow.size == signed.size)
                .values(cosigned_note=cosigned_note)
            )
        result = SignedCheckpoint(signed.checkpoint, signed.note, signed.created_at, cosigned_note)
        with self._lock:
            self._opened.pop(signed.size, None)
            if self._latest is not None and self._latest.size == signed.size:
                self._latest = result
        return result

    # --- signing -------------------------------------------------------------

    def _sign_current(self) -> SignedCheckpoint:
        try:
            signed, fresh = self._sign_checked()
        except CheckpointChainError as exc:
            log.critical("refusing to sign a checkpoint: %s", exc)
            if self._on_chain_error is not None:
                self._on_chain_error(exc)
            raise
        if fresh:
            log.info(
                "checkpoint signed",
                extra={"tree_size": signed.size, "root_hash": signed.checkpoint.root_hash.hex()},
            )
        self._latest = signed
        self._loaded = True
        if fresh and self._on_signed is not None:
            self._on_signed(signed)
        return signed

    def _sign_checked(self) -> tuple[SignedCheckpoint, bool]:
        with self._db.session() as session:
            storage.lock_for_writing_first(session)
            size = storage.tree_size(session)
            previous = self._previous(session)
            root = storage.root_hash(session, size)
            if previous is not None:
                self._prove_extends(session, previous, size, root)
                if previous.size == size:
                    stored = storage.checkpoint_at(session, size)
                    if stored is not None:
                        return self._open(stored), False
            existing = storage.checkpoint_at(session, size)
            if existing is not None:
                signed = self._open(existing)
                return signed, False
            checkpoint = Checkpoint(self._signer.name, size, root)
            now = self._clock()
            note = checkpoint.sign(self._signer)
            # Outside the database first: a checkpoint the journal lacks was never published.
            self.journal.append(size, note)
            storage.save_checkpoint(session, size, root, note, now=now)
            return SignedCheckpoint(checkpoint, note, now), True

    def _previous(self, session: Session) -> Checkpoint | None:
        """The newest checkpoint on record: the journal's, caught up with the database's.

        A database checkpoint newer than the journal's (signed by another
        replica, or before the journal existed) is taken only if it is signed
        by the log key and proven to extend the journal's.
        """
        record = self.journal.latest()
        from_journal = None
        if record is not None:
            try:
                from_journal = Checkpoint.open(record.note, self._verifier)
            except (NoteError, CheckpointError) as exc:
                raise CheckpointChainError(
                    f"{self.journal.path}: the newest journal checkpoint does not open with "
                    f"the log key: {exc}"
                ) from None
        row = storage.latest_checkpoint(session)
        from_db = None if row is None else self._open(row).checkpoint
        if from_db is None or (from_journal is not None and from_db.size <= from_journal.size):
            return from_journal
        if from_journal is not None:
            self._prove_extends(session, from_journal, from_db.size, from_db.root_hash)
        else:
            log.warning(
                "the checkpoint journal is empty; starting it from the database's newest "
                "checkpoint (trust on first use)",
                extra={"journal": str(self.journal.path), "tree_size": from_db.size},
            )
        assert row is not None
        self.journal.append(row.size, row.cosigned_note or row.note)
        return from_db

    def _prove_extends(
        self, session: Session, previous: Checkpoint, size: int, root: bytes
    ) -> None:
        if previous.size > size:
            raise CheckpointChainError(
                f"the log holds {size} leaves, fewer than the {previous.size} of the last "
                "signed checkpoint: leaves were deleted"
            )
        try:
            proof = storage.consistency_proof(session, previous.size, size)
            merkle.verify_consistency(previous.size, size, proof, previous.root_hash, root)
        except (merkle.MerkleError, storage.StorageError) as exc:
            raise CheckpointChainError(
                f"the tree of {size} leaves does not extend the last signed checkpoint "
                f"(size {previous.size}, root {previous.root_hash.hex()}): {exc}. Leaves "
                "below that size were rewritten; restore them (or the database) before the "
                "log signs again"
            ) from None


def _open_note(note: str, verifier: Verifier, size: int) -> Checkpoint:
    try:
        checkpoint = Checkpoint.open(note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise storage.CorruptStorageError(
            f"stored checkpoint of size {size} does not open with the log key: {exc}"
        ) from None
    if checkpoint.size != size:
        raise storage.CorruptStorageError(
            f"stored checkpoint of size {size}: its note says size {checkpoint.size}"
        )
    return checkpoint


def _signed(row: CheckpointRow, verifier: Verifier) -> SignedCheckpoint:
    """A stored checkpoint, opened with the log's key: a row altered in the database is refused."""
    checkpoint = _open_note(row.note, verifier, row.size)
    if checkpoint.root_hash != row.root_hash:
        raise storage.CorruptStorageError(
            f"stored checkpoint of size {row.size}: its note says root "
            f"{checkpoint.root_hash.hex()}, its column {row.root_hash.hex()}"
        )
    cosigned = row.cosigned_note
    if cosigned is not None:
        other = _open_note(cosigned, verifier, row.size)
        if other != checkpoint:
            raise storage.CorruptStorageError(
                f"stored checkpoint of size {row.size}: its cosigned note is of another tree"
            )
    return SignedCheckpoint(checkpoint, row.note, storage.as_utc(row.created_at), cosigned)
