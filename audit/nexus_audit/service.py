"""The audit log as one service: intake, events, checkpoints and proofs over one database.

`AuditLog` owns the pieces (database, log key, key wrapper, catalogs,
checkpoint signer) and is what the HTTP router, the CLI and the control plane's
outbox drainer call. Erasure, retention, coverage and evidence export live in
their own modules and work through it.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.catalog import Catalogs, load_catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import KeyWrapper, LocalKeyWrapper
from nexus_audit.events import CONTROL_PLANE_TENANT, ControlEvent, PreparedEvent, prepare_event
from nexus_audit.gc_pause import cyclic_gc_paused
from nexus_audit.intake import (
    DecisionEvent,
    IntakeLimits,
    PreparedDecision,
    decode_upload,
    parse_events,
    prepare_decisions,
)
from nexus_audit.keyfiles import load_log_key, load_master_key
from nexus_audit.note import Signer, Verifier
from nexus_audit.payloads import OpenedPayload, PayloadToSeal, PayloadVault
from nexus_audit.proof import TlogProof
from nexus_audit.search import (
    INDEX_BATCH,
    Breakdown,
    DecisionPage,
    DecisionQuery,
    DecisionRecord,
    EvidenceCounts,
    control_breakdown,
    control_counts,
    control_events,
    hit_of,
    known_rules,
    previous_checkpoint_size,
    read_batch,
    search_decisions,
    write_batch,
)
from nexus_audit.settings import AuditSettings
from nexus_audit.signer import CheckpointSigner, SignedCheckpoint
from nexus_contract.errors import NexusError

__all__ = [
    "AppendResult",
    "AuditError",
    "AuditLog",
    "CheckpointNotFoundError",
    "ConsistencyProof",
    "LeafNotFoundError",
    "LeafNotInCheckpointError",
]

log = logging.getLogger("nexus.audit")


class AuditError(NexusError):
    """A request to the audit log cannot be served as asked."""


class LeafNotFoundError(AuditError):
    """No leaf has the given index or decision id."""


class CheckpointNotFoundError(AuditError):
    """No checkpoint was signed for the given tree size."""


class LeafNotInCheckpointError(AuditError):
    """The leaf was appended after the checkpoint asked for."""


@dataclass(frozen=True)
class AppendResult:
    """How many leaves a batch added, and how many it skipped as already logged."""

    accepted: int
    duplicates: int
    size: int
    """The tree size after the batch."""

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "size": self.size}


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 proof that tree ``old_size`` is a prefix of ``new_size``, with their heads."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]
    new_checkpoint: str
    """The signed checkpoint note of ``new_size``."""
    old_checkpoint: str | None
    """The signed note of ``old_size`` when one was signed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": base64.b64encode(self.old_root).decode(),
            "new_root": base64.b64encode(self.new_root).decode(),
            "proof": [base64.b64encode(value).decode() for value in self.hashes],
            "old_checkpoint": self.old_checkpoint,
            "new_checkpoint": self.new_checkpoint,
        }


class AuditLog:
    """The audit service. Thread-safe: the database serialises appends."""

    def __init__(
        self,
        db: AuditDatabase,
        signer: Signer,
        wrapper: KeyWrapper,
        catalogs: Catalogs,
        *,
        checkpoint_every_leaves: int,
        checkpoint_every_s: float,
        limits: IntakeLimits,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.catalogs = catalogs
        self.limits = limits
        self.vault = PayloadVault(wrapper)
        self.checkpoint_signer = CheckpointSigner(
            db,
            signer,
            every_leaves=checkpoint_every_leaves,
            every_s=checkpoint_every_s,
            clock=clock,
        )
        self._verifier = signer.verifier
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: AuditSettings, *, migrate: bool = True) -> AuditLog:
        """Open the log the settings describe; the key files must exist (`init-keys`)."""
        signer = load_log_key(settings.log_key_file)
        if signer.name != settings.origin:
            raise AuditError(
                f"{settings.log_key_file}: the log key is named {signer.name!r} but the "
                f"origin is {settings.origin!r}; they must be equal"
            )
        wrapper = LocalKeyWrapper(load_master_key(settings.master_key_file))
        db = AuditDatabase(settings.database_url)
        if migrate:
            db.migrate()
        return cls(
            db,
            signer,
            wrapper,
            load_catalogs(settings.catalogs_dir),
            checkpoint_every_leaves=settings.checkpoint_every_leaves,
            checkpoint_every_s=settings.checkpoint_every_s,
            limits=IntakeLimits(settings.max_batch_bytes, settings.max_batch_events),
        )

    @property
    def verifier(self) -> Verifier:
        """The log's public key: what checkpoints, proofs and exports verify against."""
        return self._verifier

    @property
    def origin(self) -> str:
        return self._verifier.name

    def now(self) -> datetime:
        return self._clock()

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Sign an initial checkpoint if there is none, and start the checkpoint timer."""
        if self.checkpoint_signer.latest() is None:
            self.checkpoint_signer.checkpoint()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.checkpoint_signer.run,
                args=(self._stop,),
                name="audit-checkpoint-signer",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.db.dispose()

    # --- appending -----------------------------------------------------------

    def ingest_upload(
        self,
        body: bytes,
        content_encoding: str | None,
        *,
        region: str | None = None,
        enforcer: str | None = None,
    ) -> AppendResult:
        """Take one decision_logs upload as OPA sends it; all or nothing.

        Raises `nexus_audit.intake.IntakeError` subclasses for a refused batch.
        """
        with cyclic_gc_paused():
            raw = decode_upload(body, content_encoding, self.limits)
            events = parse_events(raw, self.limits)
            prepared = prepare_decisions(events, self.catalogs, region=region, enforcer=enforcer)
            return self._append_prepared_decisions(prepared)

    def append_decisions(
        self,
        events: Sequence[DecisionEvent],
        *,
        region: str | None = None,
        enforcer: str | None = None,
    ) -> AppendResult:
        """Append validated decision events in one transaction, skipping logged decision ids."""
        prepared = prepare_decisions(events, self.catalogs, region=region, enforcer=enforcer)
        return self._append_prepared_decisions(prepared)

    def _append_prepared_decisions(self, prepared: Sequence[PreparedDecision]) -> AppendResult:
        with self.db.session() as session:
            appended = self._append(session, prepared)
        result = AppendResult(appended.accepted, appended.duplicates, appended.size)
        log.info("decisions appended", extra=result.as_dict())
        self._after_append(appended.size)
        return result

    def append_events(self, events: Iterable[ControlEvent]) -> AppendResult:
        """Append control-plane outbox events in one transaction; idempotent on their ids."""
        prepared = [
            prepare_event(
                event_type=event.type,
                actor=event.actor,
                time=event.created_at,
                payload=event.payload,
                event_id=event.event_id,
                tenant=_string_or_none(event.payload.get("tenant")),
            )
            for event in events
        ]
        with self.db.session() as session:
            appended = self._append(session, prepared)
        result = AppendResult(appended.accepted, appended.duplicates, appended.size)
        log.info("events appended", extra=result.as_dict())
        self._after_append(appended.size)
        return result

    def append_in(
        self, session: Session, items: Sequence[PreparedDecision | PreparedEvent]
    ) -> storage.Appended:
        """Append within the caller's transaction (erasure destroys keys in the same one).

        The caller must call `after_append` with the new size once it committed.
        """
        return self._append(session, items)

    def after_append(self, size: int) -> None:
        self._after_append(size)

    def _append(
        self, session: Session, items: Sequence[PreparedDecision | PreparedEvent]
    ) -> storage.Appended:
        now = self._clock()
        appended = storage.append(session, [item.leaf for item in items], now=now)
        to_seal = []
        for item, index in zip(items, appended.indexes, strict=True):
            if index is None:
                continue
            if isinstance(item, PreparedDecision):
                to_seal.append(
                    PayloadToSeal(
                        index, item.tenant, item.subject, item.payload, item.salt, item.leaf.time
                    )
                )
            elif item.payload is not None and item.salt is not None:
                to_seal.append(
                    PayloadToSeal(
                        index, CONTROL_PLANE_TENANT, None, item.payload, item.salt, item.leaf.time
                    )
                )
        self.vault.seal(session, to_seal, now=now, keys_epoch=appended.keys_epoch)
        return appended

    def _after_append(self, size: int) -> None:
        try:
            self.checkpoint_signer.maybe_checkpoint(size)
        except Exception:
            # The leaves are committed; the timer signs the checkpoint on its next tick.
            log.exception("checkpoint after append failed; the timer will retry")

    # --- reading -------------------------------------------------------------

    def size(self) -> int:
        with self.db.session() as session:
            return storage.tree_size(session)

    def checkpoint(self) -> SignedCheckpoint:
        """Sign the tree as it is now (or return the checkpoint that already covers it)."""
        return self.checkpoint_signer.checkpoint()

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        return self.checkpoint_signer.latest()

    def leaf(
        self, *, index: int | None = None, decision_id: str | None = None
    ) -> storage.StoredLeaf:
        with self.db.session() as session:
            resolved = self._resolve(session, index, decision_id)
            found = storage.leaf_at(session, resolved)
        if found is None:
            raise LeafNotFoundError(f"no leaf has index {resolved}")
        return found

    def payload(self, index: int) -> OpenedPayload:
        """The decrypted payload of leaf ``index``, or why it is gone."""
        with self.db.session() as session:
            return self.vault.open(session, [index])[index]

    def inclusion_proof(
        self,
        *,
        index: int | None = None,
        decision_id: str | None = None,
        size: int | None = None,
    ) -> TlogProof:
        """A C2SP tlog-proof of one leaf against the checkpoint of ``size``.

        ``size`` defaults to the latest checkpoint; when that does not cover
        the leaf yet, a fresh checkpoint is signed.
        """
        with self.db.session() as session:
            resolved = self._resolve(session, index, decision_id)
            if size is None:
                signed = self.checkpoint_signer.latest(session)
                if signed is not None and resolved < signed.size:
                    hashes = storage.inclusion_proof(session, resolved, signed.size)
                    return TlogProof(resolved, hashes, signed.note)
            else:
                signed = self.checkpoint_signer.at(size, session)
                if signed is None:
                    raise CheckpointNotFoundError(
                        f"no checkpoint was signed for tree size {size}; "
                        "ask without a size for the latest"
                    )
                if resolved >= signed.size:
                    raise LeafNotInCheckpointError(
                        f"leaf {resolved} was appended after the checkpoint of size {signed.size}"
                    )
                hashes = storage.inclusion_proof(session, resolved, signed.size)
                return TlogProof(resolved, hashes, signed.note)
        fresh = self.checkpoint_signer.checkpoint()
        with self.db.session() as session:
            hashes = storage.inclusion_proof(session, resolved, fresh.size)
        return TlogProof(resolved, hashes, fresh.note)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that tree ``old_size`` is a prefix of the checkpointed tree ``new_size``.

        ``new_size`` defaults to the latest checkpoint and must be a checkpointed size.
        """
        if new_size is None:
            latest = self.checkpoint_signer.latest()
            if latest is None:
                raise CheckpointNotFoundError("no checkpoint has been signed yet")
            new = latest
        else:
            found = self.checkpoint_signer.at(new_size)
            if found is None:
                raise CheckpointNotFoundError(f"no checkpoint was signed for tree size {new_size}")
            new = found
        if not 0 <= old_size <= new.size:
            raise LeafNotInCheckpointError(
                f"old size {old_size} must be between 0 and the new size {new.size}"
            )
        old = self.checkpoint_signer.at(old_size)
        with self.db.session() as session:
            hashes = storage.consistency_proof(session, old_size, new.size)
            old_root = storage.root_hash(session, old_size)
        return ConsistencyProof(
            old_size=old_size,
            new_size=new.size,
            old_root=old_root,
            new_root=new.checkpoint.root_hash,
            hashes=hashes,
            new_checkpoint=new.note,
            old_checkpoint=None if old is None else old.note,
        )

    # --- search (the console) -------------------------------------------------

    def index_decisions(self, batch: int = INDEX_BATCH) -> int:
        """Bring the decision search index one batch closer to the tree; returns leaves read."""
        with self.db.session() as session:
            read = read_batch(session, self.vault, batch=batch)
        if read.end <= read.start:
            return 0
        with self.db.session() as session:
            return write_batch(session, read)

    def search_decisions(self, query: DecisionQuery) -> DecisionPage:
        """One page of decisions matching ``query`` (`nexus_audit.search`), newest first."""
        with self.db.session() as session:
            return search_decisions(session, self.catalogs, query)

    def previous_checkpoint_size(self, size: int) -> int | None:
        """The checkpoint before the one of ``size`` (the log health page checks the two agree)."""
        with self.db.session() as session:
            return previous_checkpoint_size(session, size)

    def decision_rules(self) -> tuple[str, ...]:
        """Rule names the search index knows."""
        with self.db.session() as session:
            return known_rules(session)

    def evidence_counts(
        self, prefix: str, since: datetime, until: datetime
    ) -> dict[str, EvidenceCounts]:
        """Indexed evidence per control whose id starts with ``prefix``, for the UTC days of
        ``[since, until)`` (a period the console gives in whole days)."""
        with self.db.session() as session:
            return control_counts(
                session, prefix, since.strftime("%Y-%m-%d"), until.strftime("%Y-%m-%d")
            )

    def evidence_events(
        self, control: str, since: datetime, until: datetime, limit: int = 200
    ) -> list[tuple[int, dict[str, Any]]]:
        """The newest events (index, entry) evidencing ``control`` in ``[since, until)``."""
        with self.db.session() as session:
            return [
                (index, dict(entry))
                for index, entry in control_events(session, control, since, until, limit=limit)
            ]

    def evidence_breakdown(self, control: str, since: datetime, until: datetime) -> Breakdown:
        """The period's newest decisions evidencing ``control`` by tenant, route and tool."""
        with self.db.session() as session:
            return control_breakdown(session, control, since, until)

    def decision_record(self, decision_id: str) -> DecisionRecord:
        """A decision's entry, payload (or why it is gone) and inclusion proof."""
        with self.db.session() as session:
            index = self._resolve(session, None, decision_id)
            leaf = storage.leaf_at(session, index)
            if leaf is None:
                raise LeafNotFoundError(f"decision {decision_id} is not in the log")
            opened = self.vault.open(session, [index])[index]
        proof = self.inclusion_proof(index=index)
        payload = orjson.loads(opened.plaintext) if opened.plaintext is not None else None
        return DecisionRecord(hit_of(index, leaf.entry), leaf.entry, opened.status, payload, proof)

    def _resolve(self, session: Session, index: int | None, decision_id: str | None) -> int:
        if (index is None) == (decision_id is None):
            raise TypeError("give exactly one of index and decision_id")
        if decision_id is not None:
            found = storage.leaf_index_of_decision(session, decision_id)
            if found is None:
                raise LeafNotFoundError(f"decision {decision_id} is not in the log")
            return found
        assert index is not None
        if not 0 <= index < storage.tree_size(session):
            raise LeafNotFoundError(f"no leaf has index {index}")
        return index


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
