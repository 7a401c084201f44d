"""The audit log on a real PostgreSQL: COPY appends, one sequencer for two writers, tampering."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from nexus_audit import merkle, storage
from nexus_audit.cli import audit_app
from nexus_audit.payloads import PayloadStatus
from nexus_audit.verify import LeafHashMismatchError, verify_log
from tests.fixtures.servers import PostgresServer
from tests.integration.audit.conftest import LogFactory, psql
from tests.unit.audit.harness import LOG_KEY, erase
from tests.unit.audit.opa_events import events, gzip_batch

pytestmark = pytest.mark.postgres


def test_appends_and_proofs_match_the_pure_merkle_tree(make_pg_log: LogFactory) -> None:
    log = make_pg_log()
    sent: list[dict[str, Any]] = []
    for size in (1, 7, 64, 200, 129):
        batch = events(size, subject=f"s{size}")
        log.ingest_upload(gzip_batch(batch), "gzip")
        sent.extend(batch)
    signed = log.checkpoint()

    with log.db.session() as session:
        entries = [storage.leaf_at(session, i).entry for i in range(len(sent))]  # type: ignore[union-attr]
    reference = merkle.InMemoryTree.from_entries(entries)
    assert signed.checkpoint.root_hash == merkle.root_hash(len(sent), reference.subtree_hash)
    for event in sent[::37]:
        proof = log.inclusion_proof(decision_id=event["decision_id"])
        proof.verify(LOG_KEY.verifier, leaf=log.leaf(index=proof.index).entry)
    assert log.payload(0).status is PayloadStatus.PRESENT
    assert verify_log(log.db, LOG_KEY.verifier).size == len(sent)


def test_two_writers_appending_at_once_keep_one_consistent_tree(make_pg_log: LogFactory) -> None:
    writers = [make_pg_log(), make_pg_log()]  # separate engines and connection pools
    shared = events(40, subject="shared")
    own = [[events(25, subject=f"w{w}-{n}") for n in range(8)] for w in range(2)]
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for batch in own[number]:
                writers[number].ingest_upload(gzip_batch(batch + shared), "gzip")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    expected = 40 + 2 * 8 * 25
    assert writers[0].size() == expected
    with writers[0].db.engine.connect() as connection:
        indexes = connection.exec_driver_sql("SELECT leaf_index FROM leaves ORDER BY 1").scalars()
        assert list(indexes) == list(range(expected))
    writers[0].checkpoint()
    report = verify_log(writers[1].db, LOG_KEY.verifier)
    assert report.size == expected


def test_a_row_altered_with_psql_is_caught_naming_the_leaf(
    make_pg_log: LogFactory,
    postgres: PostgresServer,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    log = make_pg_log()
    log.ingest_upload(gzip_batch(events(30)), "gzip")
    log.checkpoint()
    decision = log.leaf(index=13).decision_id

    psql(
        postgres,
        pg_url,
        "UPDATE leaves SET entry = convert_to(replace(convert_from(entry, 'UTF8'), "
        "'\"allowed\":false', '\"allowed\":true'), 'UTF8') WHERE leaf_index IN (13, 21)",
    )

    with pytest.raises(LeafHashMismatchError) as caught:
        verify_log(log.db, LOG_KEY.verifier)
    assert (caught.value.index, caught.value.record_id) == (13, f"decision {decision}")

    monkeypatch.setenv("NEXUS_AUDIT_DATABASE_URL", pg_url)
    monkeypatch.setenv("NEXUS_AUDIT_CHECKPOINT_JOURNAL", str(tmp_path / "checkpoints.jsonl"))
    result = CliRunner().invoke(audit_app, ["verify", "--key", str(LOG_KEY.verifier)])
    assert result.exit_code == 1
    assert "leaf 13 (decision" in result.output


def test_erasure_on_postgresql_keeps_every_proof(make_pg_log: LogFactory) -> None:
    log = make_pg_log()
    batch = events(6, subject="alice") + events(4, subject="bob")
    log.ingest_upload(gzip_batch(batch), "gzip")
    erase(log, tenant="acme", subject="alice", actor="dpo")
    log.checkpoint()

    statuses = [log.payload(i).status for i in range(10)]
    assert statuses == [PayloadStatus.ERASED] * 6 + [PayloadStatus.PRESENT] * 4
    assert (
        verify_log(log.db, LOG_KEY.verifier).size == 13
    )  # the decisions, and the erasure requested, done, compacted


def test_the_audit_schema_can_share_the_control_planes_database(
    pg_url: str, make_pg_log: LogFactory
) -> None:
    from nexus_control.store.database import control_database

    control = control_database(pg_url)
    control.migrate()
    control.dispose()
    log = make_pg_log()
    log.ingest_upload(gzip_batch(events(2)), "gzip")
    log.db.migrate()  # idempotent, and does not touch the control plane's tables

    engine = create_engine(pg_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"alembic_version_control", "alembic_version_audit", "leaves", "outbox"} <= tables
