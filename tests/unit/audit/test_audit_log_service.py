"""The audit log service: control-plane events, checkpoints every N leaves or T seconds, proofs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.events import INLINE_PAYLOAD_LIMIT, ControlEvent
from nexus_audit.payloads import PayloadStatus
from nexus_audit.proof import TlogProof
from nexus_audit.service import (
    AuditLog,
    CheckpointNotFoundError,
    LeafNotFoundError,
    LeafNotInCheckpointError,
)
from tests.unit.audit.harness import LOG_KEY, Clock
from tests.unit.audit.opa_events import events, gzip_batch

_CREATED = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


def _outbox(n: int, event_type: str = "bundle.published", **payload: Any) -> ControlEvent:
    return ControlEvent(
        id=n,
        type=event_type,
        actor="alice@nexus.example",
        created_at=_CREATED,
        payload=payload or {"bundle": "gateway", "revision": f"r{n}"},
    )


def test_control_plane_events_are_logged_once_per_outbox_id(audit_log: AuditLog) -> None:
    first = audit_log.append_events([_outbox(1), _outbox(2)])
    again = audit_log.append_events([_outbox(2), _outbox(3)])

    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (1, 1)
    entry = orjson.loads(audit_log.leaf(index=0).entry)
    assert entry == {
        "v": 1,
        "kind": "event",
        "event_id": "cp-1",
        "type": "bundle.published",
        "actor": "alice@nexus.example",
        "time": "2026-11-20T10:30:00.000000Z",
        "controls": ["ISO27001:A.8.32", "ISO42001:A.6.2.5", "PCI:6.5.1", "SOC2:CC8.1"],
        "payload": {"bundle": "gateway", "revision": "r1"},
    }


def test_a_large_event_payload_is_committed_and_stored_encrypted(audit_log: AuditLog) -> None:
    big = _outbox(9, "rollout.step", notes="x" * INLINE_PAYLOAD_LIMIT)
    audit_log.append_events([big])
    entry = orjson.loads(audit_log.leaf(index=0).entry)

    assert "payload" not in entry
    assert len(entry["payload_commitment"]) == 64
    opened = audit_log.payload(0)
    assert opened.status is PayloadStatus.PRESENT
    assert orjson.loads(opened.plaintext or b"") == big.payload


def test_an_outbox_event_of_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="type"):
        ControlEvent(id=1, type="Bundle Published", actor="a", created_at=_CREATED)
    with pytest.raises(ValueError, match="created_at"):
        ControlEvent(id=1, type="x", actor="a", created_at=datetime(2026, 1, 1))


def test_a_checkpoint_follows_every_n_leaves(make_log: Any) -> None:
    log = make_log(every_leaves=10)
    log.ingest_upload(gzip_batch(events(9)), "gzip")
    assert log.latest_checkpoint() is not None and log.latest_checkpoint().size == 9  # first ever

    log.ingest_upload(gzip_batch(events(9, subject="s")), "gzip")
    assert log.latest_checkpoint().size == 9
    log.ingest_upload(gzip_batch(events(1, subject="t")), "gzip")
    assert log.latest_checkpoint().size == 19


def test_a_checkpoint_follows_t_seconds_only_if_the_tree_grew(make_log: Any, clock: Clock) -> None:
    log = make_log(every_leaves=1000, every_s=5)
    log.ingest_upload(gzip_batch(events(3)), "gzip")
    first = log.latest_checkpoint()
    assert first is not None and first.size == 3

    log.ingest_upload(gzip_batch(events(2, subject="s")), "gzip")
    assert log.checkpoint_signer.maybe_checkpoint() is None
    clock.advance(5)
    grown = log.checkpoint_signer.maybe_checkpoint()
    assert grown is not None and grown.size == 5
    clock.advance(60)
    assert log.checkpoint_signer.maybe_checkpoint() is None


def test_stored_checkpoints_open_with_the_log_key(audit_log: AuditLog) -> None:
    audit_log.ingest_upload(gzip_batch(events(4)), "gzip")
    signed = audit_log.checkpoint()
    opened = Checkpoint.open(signed.note, LOG_KEY.verifier)

    assert opened == signed.checkpoint
    assert (opened.origin, opened.size) == ("nexus.local/audit", 4)
    assert audit_log.checkpoint_signer.at(4) == signed


def test_inclusion_proofs_by_decision_id_and_index_verify_offline(audit_log: AuditLog) -> None:
    batch = events(13)
    audit_log.ingest_upload(gzip_batch(batch), "gzip")
    audit_log.checkpoint()

    by_id = audit_log.inclusion_proof(decision_id=batch[6]["decision_id"])
    by_index = audit_log.inclusion_proof(index=6)
    parsed = TlogProof.parse(by_id.encode())

    assert by_id == by_index == parsed
    leaf = audit_log.leaf(index=6)
    assert parsed.verify(LOG_KEY.verifier, leaf=leaf.entry).size == 13


def test_a_proof_against_an_older_checkpoint_uses_that_checkpoint(audit_log: AuditLog) -> None:
    audit_log.ingest_upload(gzip_batch(events(5)), "gzip")
    audit_log.checkpoint()
    audit_log.ingest_upload(gzip_batch(events(6, subject="s")), "gzip")
    audit_log.checkpoint()

    proof = audit_log.inclusion_proof(index=2, size=5)
    assert proof.verify(LOG_KEY.verifier, leaf=audit_log.leaf(index=2).entry).size == 5
    with pytest.raises(LeafNotInCheckpointError):
        audit_log.inclusion_proof(index=7, size=5)
    with pytest.raises(CheckpointNotFoundError):
        audit_log.inclusion_proof(index=2, size=6)


def test_a_proof_of_a_leaf_newer_than_the_latest_checkpoint_signs_a_fresh_one(
    audit_log: AuditLog,
) -> None:
    audit_log.ingest_upload(gzip_batch(events(2)), "gzip")
    audit_log.checkpoint()
    audit_log.ingest_upload(gzip_batch(events(3, subject="s")), "gzip")

    proof = audit_log.inclusion_proof(index=4)
    assert proof.verify(LOG_KEY.verifier, leaf=audit_log.leaf(index=4).entry).size == 5


def test_unknown_leaves_are_reported(audit_log: AuditLog) -> None:
    audit_log.ingest_upload(gzip_batch(events(2)), "gzip")
    with pytest.raises(LeafNotFoundError):
        audit_log.inclusion_proof(decision_id="no-such-decision")
    with pytest.raises(LeafNotFoundError):
        audit_log.inclusion_proof(index=2)


def test_consistency_proofs_between_checkpoints_verify(audit_log: AuditLog) -> None:
    audit_log.ingest_upload(gzip_batch(events(7)), "gzip")
    old = audit_log.checkpoint()
    audit_log.ingest_upload(gzip_batch(events(12, subject="s")), "gzip")
    new = audit_log.checkpoint()

    proof = audit_log.consistency_proof(old.size)
    assert (proof.old_size, proof.new_size) == (7, 19)
    assert proof.old_checkpoint == old.note and proof.new_checkpoint == new.note
    merkle.verify_consistency(
        7, 19, proof.hashes, old.checkpoint.root_hash, new.checkpoint.root_hash
    )
    assert audit_log.consistency_proof(3, 19).old_checkpoint is None
