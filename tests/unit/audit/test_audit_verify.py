"""verify_log recomputes the whole log and names the first thing that was altered."""

from __future__ import annotations

import hashlib

import pytest

from nexus_audit import merkle, storage, tiles
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog
from nexus_audit.verify import (
    CheckpointMismatchError,
    LeafEntryMismatchError,
    LeafHashMismatchError,
    LeafMissingError,
    NodeMismatchError,
    TileMismatchError,
    verify_log,
)
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import events, gzip_batch


@pytest.fixture
def filled(audit_log: AuditLog) -> AuditLog:
    for round_ in range(4):
        audit_log.ingest_upload(gzip_batch(events(11, subject=f"s{round_}")), "gzip")
        audit_log.checkpoint()
    return audit_log


def _sql(log: AuditLog, statement: str, parameters: tuple[object, ...] = ()) -> None:
    with log.db.engine.begin() as connection:
        connection.exec_driver_sql(statement, parameters)


def _decision_at(log: AuditLog, index: int) -> str:
    decision_id = log.leaf(index=index).decision_id
    assert decision_id is not None
    return decision_id


def test_an_untouched_log_verifies(filled: AuditLog) -> None:
    report = verify_log(filled.db, LOG_KEY.verifier)
    assert (report.size, report.checkpoints, report.nodes) == (44, 4, 44 - bin(44).count("1"))
    assert report.root_hash == filled.latest_checkpoint().checkpoint.root_hash  # type: ignore[union-attr]


def test_an_empty_log_verifies(audit_log: AuditLog) -> None:
    audit_log.checkpoint()
    assert verify_log(audit_log.db, LOG_KEY.verifier).size == 0


def test_an_altered_entry_is_named_by_leaf_index_and_decision_id(filled: AuditLog) -> None:
    decision = _decision_at(filled, 17)
    _sql(
        filled,
        "UPDATE leaves SET entry = CAST(replace(entry, 'eu-west-1', 'eu-west-2') AS BLOB) "
        "WHERE leaf_index = 17",
    )

    with pytest.raises(LeafHashMismatchError) as caught:
        verify_log(filled.db, LOG_KEY.verifier)
    assert (caught.value.index, caught.value.record_id) == (17, f"decision {decision}")
    assert f"leaf 17 (decision {decision}) was altered" in str(caught.value)


def test_an_entry_rewritten_with_its_leaf_hash_is_caught_by_the_node_above_it(
    filled: AuditLog,
) -> None:
    entry = filled.leaf(index=20).entry.replace(b'"tenant":"acme"', b'"tenant":"acmf"')
    digest = hashlib.sha256(b"\x00" + entry).digest()
    _sql(
        filled,
        "UPDATE leaves SET entry = ?, leaf_hash = ? WHERE leaf_index = 20",
        (entry, digest),
    )
    with pytest.raises(NodeMismatchError, match=r"level 1, index 10\) over leaves \[20, 22\)"):
        verify_log(filled.db, LOG_KEY.verifier)


def test_an_altered_node_is_named(filled: AuditLog) -> None:
    _sql(filled, "UPDATE nodes SET hash = zeroblob(32) WHERE level = 3 AND node_index = 2")
    with pytest.raises(NodeMismatchError) as caught:
        verify_log(filled.db, LOG_KEY.verifier)
    assert (caught.value.level, caught.value.node_index, caught.value.first_leaf) == (3, 2, 16)


def test_a_deleted_leaf_is_named(filled: AuditLog) -> None:
    _sql(filled, "PRAGMA foreign_keys=OFF")
    with filled.db.engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql("DELETE FROM leaf_controls WHERE leaf_index = 30")
        connection.exec_driver_sql("DELETE FROM payloads WHERE leaf_index = 30")
        connection.exec_driver_sql("DELETE FROM leaves WHERE leaf_index = 30")
    with pytest.raises(LeafMissingError, match="leaf 30 is missing"):
        verify_log(filled.db, LOG_KEY.verifier)


def test_a_swapped_decision_id_column_is_caught(filled: AuditLog) -> None:
    _sql(filled, "UPDATE leaves SET decision_id = 'forged' WHERE leaf_index = 5")
    with pytest.raises(LeafEntryMismatchError, match="leaf 5 \\(decision forged\\)"):
        verify_log(filled.db, LOG_KEY.verifier)


def test_a_forged_checkpoint_is_named(filled: AuditLog) -> None:
    forger = Signer("nexus.local/audit", bytes(range(1, 33)))
    other = filled.checkpoint_signer.at(22)
    assert other is not None
    _sql(
        filled, "UPDATE checkpoints SET note = ? WHERE size = 22", (other.checkpoint.sign(forger),)
    )
    with pytest.raises(CheckpointMismatchError, match="checkpoint of tree size 22"):
        verify_log(filled.db, LOG_KEY.verifier)


def test_a_checkpoint_over_a_rewritten_history_is_named(filled: AuditLog) -> None:
    """Leaves and every node rewritten consistently still disagree with the signed root."""
    _sql(filled, "UPDATE leaves SET entry = CAST(replace(entry, 'acme', 'acmf') AS BLOB)")
    with filled.db.engine.begin() as connection:
        rows = connection.exec_driver_sql("SELECT leaf_index, entry FROM leaves").all()
        for index, entry in rows:
            digest = hashlib.sha256(b"\x00" + entry).digest()
            connection.exec_driver_sql(
                "UPDATE leaves SET leaf_hash = ? WHERE leaf_index = ?", (digest, index)
            )
        connection.exec_driver_sql("DELETE FROM nodes")
        tree = merkle.InMemoryTree.from_entries(entry for _, entry in rows)
        for level in range(1, 6):
            for node in range(44 >> level):
                value = tree.subtree_hash(node << level, (node + 1) << level)
                connection.exec_driver_sql(
                    "INSERT INTO nodes VALUES (?, ?, ?)", (level, node, value)
                )
    with pytest.raises(CheckpointMismatchError, match="checkpoint of tree size 11"):
        verify_log(filled.db, LOG_KEY.verifier)


def _tiled(log: AuditLog) -> AuditLog:
    """600 leaves in batches of 70, so each full tile is completed by a batch that straddles it."""
    for round_ in range(600 // 70 + 1):
        log.ingest_upload(gzip_batch(events(70, subject=f"t{round_}")), "gzip")
    log.checkpoint()
    return log


def test_full_tiles_are_stored_whole_and_equal_the_hashes_they_are_made_of(
    audit_log: AuditLog,
) -> None:
    log = _tiled(audit_log)
    size = log.size()
    with log.db.session() as session:
        stored = [storage.stored_tile(session, 0, n) for n in range(3)]
        assert stored[2] is None, "a partial tile is never stored"
        for n in (0, 1):
            hashes = b"".join(log.leaf(index=i).leaf_hash for i in range(n * 256, (n + 1) * 256))
            assert stored[n] == hashes
            assert tiles.read_tile(session, tiles.Tile(0, n, 256), size) == hashes
    assert verify_log(log.db, LOG_KEY.verifier).size == size


def test_a_rewritten_stored_tile_is_named(audit_log: AuditLog) -> None:
    """A tile altered in the database would make proofs from served tiles fail: verify says so."""
    log = _tiled(audit_log)
    forged = hashlib.sha256(b"forged").digest() * 256
    _sql(log, "UPDATE tiles SET hashes = ? WHERE level = 0 AND tile_index = 1", (forged,))
    with pytest.raises(TileMismatchError, match=r"stored tile 0/1 \(from leaf 256\)"):
        verify_log(log.db, LOG_KEY.verifier)


def test_a_stored_tile_the_tree_does_not_have_is_named(audit_log: AuditLog) -> None:
    log = _tiled(audit_log)
    _sql(
        log,
        "INSERT INTO tiles (level, tile_index, hashes) VALUES (0, 7, ?)",
        (bytes(32 * 256),),
    )
    with pytest.raises(TileMismatchError, match="no such tile"):
        verify_log(log.db, LOG_KEY.verifier)
