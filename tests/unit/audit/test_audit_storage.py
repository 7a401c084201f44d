"""Log storage: appends keep the stored tree equal to the pure Merkle tree, reading O(log n)."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from nexus_audit import merkle, storage
from nexus_audit.service import AuditLog
from nexus_audit.tables import Leaf, Node

_T = datetime(2026, 11, 2, tzinfo=UTC)


def _leaf(n: int) -> storage.NewLeaf:
    return storage.NewLeaf(
        entry=b'{"n":%d}' % n,
        kind="decision",
        time=_T,
        decision_id=f"d-{n}",
        controls=("SOC2:CC6.1",),
    )


def _append(log: AuditLog, leaves: list[storage.NewLeaf]) -> storage.Appended:
    with log.db.session() as session:
        return storage.append(session, leaves, now=_T)


def test_stored_tree_matches_the_pure_merkle_tree_across_uneven_batches(
    audit_log: AuditLog,
) -> None:
    rng = random.Random(7)
    entries: list[bytes] = []
    while len(entries) < 300:
        batch = [_leaf(len(entries) + k) for k in range(rng.randint(1, 37))]
        _append(audit_log, batch)
        entries.extend(leaf.entry for leaf in batch)
    reference = merkle.InMemoryTree.from_entries(entries)

    with audit_log.db.session() as session:
        for size in [0, 1, 2, 3, 7, 8, 9, 64, 129, 255, 256, len(entries)]:
            assert storage.root_hash(session, size) == merkle.root_hash(
                size, reference.subtree_hash
            )
        for index, size in [(0, 1), (5, 9), (128, 300), (299, 300), (255, 256), (17, 200)]:
            assert storage.inclusion_proof(session, index, size) == merkle.inclusion_proof(
                index, size, reference.subtree_hash
            )
        for old, new in [(1, 300), (7, 8), (64, 129), (100, 300), (300, 300), (0, 5)]:
            assert storage.consistency_proof(session, old, new) == merkle.consistency_proof(
                old, new, reference.subtree_hash
            )


def test_nodes_hold_exactly_the_complete_subtrees(audit_log: AuditLog) -> None:
    for start in range(0, 100, 9):
        _append(audit_log, [_leaf(n) for n in range(start, min(start + 9, 100))])

    with audit_log.db.session() as session:
        nodes = session.scalar(select(func.count()).select_from(Node))
        levels = dict(
            session.execute(select(Node.level, func.count()).group_by(Node.level)).tuples().all()
        )
    # A tree of n leaves has floor(n / 2**level) complete subtrees per level.
    assert levels == {level: 100 >> level for level in range(1, 7)}
    assert nodes == sum(100 >> level for level in range(1, 7))


def test_duplicate_ids_add_no_leaf_within_a_batch_or_across_batches(audit_log: AuditLog) -> None:
    first = _append(audit_log, [_leaf(1), _leaf(2), _leaf(1)])
    second = _append(audit_log, [_leaf(2), _leaf(3)])

    assert (first.accepted, first.duplicates, first.indexes) == (2, 1, (0, 1, None))
    assert (second.accepted, second.duplicates, second.indexes) == (1, 1, (None, 2))
    with audit_log.db.session() as session:
        assert storage.tree_size(session) == 3
        assert storage.leaf_index_of_decision(session, "d-3") == 2


def test_an_event_id_and_a_decision_id_with_the_same_text_are_different_leaves(
    audit_log: AuditLog,
) -> None:
    event_leaf = storage.NewLeaf(entry=b"{}", kind="event", time=_T, event_id="d-1")
    appended = _append(audit_log, [_leaf(1), event_leaf])
    assert appended.accepted == 2


class _Statements:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.sql.append(statement)


def _count_statements(log: AuditLog, action: Any) -> list[str]:
    recorder = _Statements()
    event.listen(log.db.engine, "before_cursor_execute", recorder)
    try:
        action()
    finally:
        event.remove(log.db.engine, "before_cursor_execute", recorder)
    return recorder.sql


def test_append_and_proofs_cost_the_same_few_queries_whatever_the_tree_size(
    make_log: Any,
) -> None:
    small, large, tiling = make_log(), make_log(), make_log()
    _append(small, [_leaf(n) for n in range(5)])
    _append(large, [_leaf(n) for n in range(1001)])
    _append(tiling, [_leaf(n) for n in range(1023)])

    def append_one(log: AuditLog) -> list[str]:
        return _count_statements(log, lambda: _append(log, [_leaf(5000)]))

    def prove(log: AuditLog) -> list[str]:
        def run() -> None:
            with log.db.session() as session:
                storage.inclusion_proof(session, 3, storage.tree_size(session))
                storage.root_hash(session, storage.tree_size(session))

        return _count_statements(log, run)

    base = len(append_one(small))
    assert base == len(append_one(large))
    # the leaf that completes a tile (every 256th) reads the tile's older hashes and stores it
    assert len(append_one(tiling)) == base + 2
    assert len(prove(small)) == len(prove(large))
    # one query for the size, then at most one for leaf hashes and one for nodes, per call
    assert len(prove(large)) <= 8


def test_a_missing_node_is_reported_as_corrupt_storage(audit_log: AuditLog) -> None:
    _append(audit_log, [_leaf(n) for n in range(8)])
    with audit_log.db.session() as session:
        session.query(Node).filter(Node.level == 3).delete()
    with (
        audit_log.db.session() as session,
        pytest.raises(storage.CorruptStorageError, match=r"\[0, 8\)"),
    ):
        storage.root_hash(session, 8)


def test_a_proof_beyond_the_tree_is_refused(audit_log: AuditLog) -> None:
    _append(audit_log, [_leaf(n) for n in range(3)])
    with audit_log.db.session() as session, pytest.raises(merkle.InvalidTreeSizeError):
        storage.inclusion_proof(session, 0, 4)


def test_leaves_keep_their_entry_bytes_and_hash(audit_log: AuditLog) -> None:
    _append(audit_log, [_leaf(0)])
    with audit_log.db.session() as session:
        row = session.get(Leaf, 0)
    assert row is not None
    assert row.entry == b'{"n":0}'
    assert row.leaf_hash == merkle.leaf_hash(b'{"n":0}')


def _append_in_thread(log: AuditLog, n: int) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        _append(log, [_leaf(n)])
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_on_sqlite_a_stale_read_then_write_fails_at_once_rather_than_waiting(
    audit_log: AuditLog,
) -> None:
    """Why the signer locks first: the busy timeout does not cover a stale snapshot."""
    _append(audit_log, [_leaf(0)])
    with audit_log.db.session() as session:
        size = storage.tree_size(session)
        root = storage.root_hash(session, size)
        thread, done = _append_in_thread(audit_log, 1)
        thread.join(10)
        assert done.is_set()
        with pytest.raises(OperationalError, match="database is locked"):
            storage.save_checkpoint(session, size, root, "n", now=_T)
        session.rollback()


def test_a_read_then_write_transaction_locked_first_makes_appenders_wait_not_fail(
    audit_log: AuditLog,
) -> None:
    _append(audit_log, [_leaf(0)])
    with audit_log.db.session() as session:
        storage.lock_for_writing_first(session)
        size = storage.tree_size(session)
        thread, done = _append_in_thread(audit_log, 1)
        assert not done.wait(0.3), "an append committed inside a locked transaction"
        storage.save_checkpoint(session, size, storage.root_hash(session, size), "n", now=_T)
    thread.join(10)
    assert done.is_set()
    with audit_log.db.session() as session:
        assert storage.tree_size(session) == 2
        assert storage.checkpoint_at(session, 1) is not None
