"""The audit log's read side: sizes, checkpoints, leaves, proofs, payloads, search, evidence.

`LogReader` is what every reader of the log asks (the HTTP routes, the console, evidence
export, erasure's checks); `AuditLog` (nexus_audit.service) is one, and adds the write side
(intake, events, the signer and witness loops). Kept apart so reading the log can be
followed without the intake's machinery.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.catalog import Catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.payloads import OpenedPayload, PayloadVault
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
    with_receipts,
    write_batch,
)
from nexus_audit.signer import CheckpointSigner, SignedCheckpoint
from nexus_contract.errors import NexusError

__all__ = [
    "AuditError",
    "CheckpointNotFoundError",
    "ConsistencyProof",
    "LeafNotFoundError",
    "LeafNotInCheckpointError",
    "LogReader",
    "QuorumUnavailableError",
]


class AuditError(NexusError):
    """A request to the audit log cannot be served as asked."""


class LeafNotFoundError(AuditError):
    """No leaf has the given index or decision id."""


class CheckpointNotFoundError(AuditError):
    """No checkpoint was signed for the given tree size."""


class LeafNotInCheckpointError(AuditError):
    """The leaf was appended after the checkpoint asked for."""


class QuorumUnavailableError(AuditError):
    """The witnesses did not cosign the checkpoint to the policy's quorum."""


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


class LogReader:
    """Reads the log; the owner (`AuditLog`) provides the database, signer, vault and catalogs."""

    db: AuditDatabase
    checkpoint_signer: CheckpointSigner
    vault: PayloadVault
    catalogs: Catalogs

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

    def evidence_pages(
        self,
        control: str,
        since: datetime,
        until: datetime,
        *,
        tenant: str | None,
        page: int = 500,
    ) -> Iterator[tuple[int, list[tuple[storage.StoredLeaf, OpenedPayload | None]]]]:
        """Leaves evidencing ``control`` in ``[since, until)`` for ``tenant`` (None: all), paged.

        Yields (tree size when reading began, page of (leaf, payload or None
        when the entry carries it inline)); payloads and salts are opened only
        for the leaves in scope. Memory holds one page.
        """
        with self.db.session() as session:
            size = storage.tree_size(session)
            stream = storage.leaves_for_control(
                session, control, since, until, below=size, tenant=tenant
            )
            while batch := list(itertools.islice(stream, page)):
                sealed = [leaf.index for leaf in batch if b'"payload_commitment"' in leaf.entry]
                with self.db.session() as own:
                    opened = self.vault.open(own, sealed)
                yield size, [(leaf, opened.get(leaf.index)) for leaf in batch]

    def recorded_decisions(
        self,
        since: datetime,
        until: datetime,
        *,
        tenant: str | None = None,
        page: int = 500,
    ) -> Iterator[list[tuple[storage.StoredLeaf, OpenedPayload]]]:
        """Decision leaves in ``[since, until)`` (of ``tenant``; None: all) with their payloads.

        Pages in leaf order over the tree as it stood when reading began, so
        the same window read twice gives the same records while the log grows.
        A payload is PRESENT, ERASED or PURGED; memory holds one page.
        """
        with self.db.session() as session:
            size = storage.tree_size(session)
            stream = storage.decision_leaves(session, since, until, below=size, tenant=tenant)
            while batch := list(itertools.islice(stream, page)):
                with self.db.session() as own:
                    opened = self.vault.open(own, [leaf.index for leaf in batch])
                yield [(leaf, opened[leaf.index]) for leaf in batch]

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> dict[int, tuple[bytes, ...]]:
        """Inclusion proofs of many leaves in the checkpointed tree ``size``, in one round."""
        with self.db.session() as session:
            return storage.inclusion_proofs(session, indexes, size)

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
                    return TlogProof(resolved, hashes, signed.published_note)
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
                return TlogProof(resolved, hashes, signed.published_note)
        fresh = self.checkpoint_signer.checkpoint()
        with self.db.session() as session:
            hashes = storage.inclusion_proof(session, resolved, fresh.size)
        return TlogProof(resolved, hashes, fresh.published_note)

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
            (hit,) = with_receipts(session, [hit_of(index, leaf.entry)])
        proof = self.inclusion_proof(index=index)
        payload = orjson.loads(opened.plaintext) if opened.plaintext is not None else None
        return DecisionRecord(hit, leaf.entry, opened.status, payload, proof)

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
