"""Attack 1: rewrite history with database access alone, then with the log key too."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_audit.checkpoint import Checkpoint
from nexus_audit.cli import audit_app
from nexus_audit.journal import CheckpointJournal
from nexus_audit.service import AuditLog
from nexus_audit.signer import CheckpointChainError
from nexus_audit.storage import consistency_proof, root_hash, tree_size
from nexus_audit.verify import CheckpointMismatchError, verify_log
from nexus_audit.witness.protocol import AddCheckpoint
from tests.fixtures.witnesses import nexus_witness
from tests.security.conftest import Api, AuditFactory
from tests.security.tampering import delete_checkpoints_above, rewrite_leaf
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch


def _flip(document: dict[str, object]) -> None:
    document["outcome"] = {"allowed": False, "http_status": 403}
    document["enforcer"] = "eu-1"


def _thirty_decisions_in_six_checkpoints(log: AuditLog) -> None:
    for round_number in range(6):
        batch = [
            decision_event(
                allowed=True,
                enforcer="eu-west-1-a",
                time=T0 + timedelta(minutes=round_number, seconds=i),
            )
            for i in range(5)
        ]
        log.ingest_upload(gzip_batch(batch), "gzip")
        log.checkpoint()


def test_rewriting_a_leaf_and_deleting_its_checkpoints_cannot_be_signed_over(
    open_audit: AuditFactory, database_url: str
) -> None:
    log = open_audit()
    _thirty_decisions_in_six_checkpoints(log)
    rewrite_leaf(database_url, 16, _flip)
    assert delete_checkpoints_above(database_url, 16) == 3

    with pytest.raises(CheckpointChainError, match="does not extend the last signed checkpoint"):
        log.checkpoint()
    assert log.metrics.gauge("chain_broken") == 1.0
    restarted = open_audit()
    restarted.ingest_upload(gzip_batch([decision_event(time=T0 + timedelta(hours=1))]), "gzip")
    with pytest.raises(CheckpointChainError):
        restarted.checkpoint()
    latest = restarted.latest_checkpoint()
    assert latest is not None and latest.size == 15, "nothing was signed over the rewrite"


def test_audit_verify_catches_a_rewrite_whose_checkpoints_were_deleted(
    open_audit: AuditFactory, database_url: str
) -> None:
    log = open_audit()
    _thirty_decisions_in_six_checkpoints(log)
    rewrite_leaf(database_url, 16, _flip)
    delete_checkpoints_above(database_url, 16)

    verify_log(log.db, LOG_KEY.verifier)  # the database alone is self-consistent again
    with pytest.raises(CheckpointMismatchError, match="was rewritten"):
        verify_log(log.db, LOG_KEY.verifier, journal=log.journal)


def test_an_outsiders_saved_checkpoint_proves_the_rewrite_even_without_the_journal(
    open_audit: AuditFactory,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = open_audit()
    _thirty_decisions_in_six_checkpoints(log)
    saved = tmp_path / "auditor-kept.txt"
    latest = log.latest_checkpoint()
    assert latest is not None
    saved.write_text(latest.published_note)
    monkeypatch.setenv("NEXUS_AUDIT_DATABASE_URL", database_url)
    monkeypatch.setenv("NEXUS_AUDIT_CHECKPOINT_JOURNAL", str(tmp_path / "no-journal.jsonl"))
    args = ["verify", "--key", str(LOG_KEY.verifier), "--trusted", str(saved)]
    before = CliRunner().invoke(audit_app, args)
    assert before.exit_code == 0, before.output
    assert "extends the trusted checkpoint(s) of size 30" in before.output

    rewrite_leaf(database_url, 16, _flip)
    delete_checkpoints_above(database_url, 16)
    after = CliRunner().invoke(audit_app, args)
    assert after.exit_code == 1
    assert "trusted checkpoint 1" in after.output


def test_a_witness_refuses_a_rewritten_history_even_signed_with_the_log_key(
    open_audit: AuditFactory, database_url: str, tmp_path: Path
) -> None:
    log = open_audit()
    witness = nexus_witness(tmp_path / "witness", "witness.example/w1", LOG_KEY.verifier).start()
    try:
        _thirty_decisions_in_six_checkpoints(log)
        genuine = log.latest_checkpoint()
        assert genuine is not None
        assert (
            witness.add_checkpoint(AddCheckpoint(0, (), genuine.note).encode()).status_code == 200
        )

        rewrite_leaf(database_url, 16, _flip)
        log.ingest_upload(gzip_batch([decision_event(time=T0 + timedelta(hours=1))]), "gzip")
        with log.db.session() as session:
            size = tree_size(session)
            forged = Checkpoint(LOG_KEY.name, size, root_hash(session, size)).sign(LOG_KEY)
            proof = consistency_proof(session, genuine.size, size)
            same_size = Checkpoint(LOG_KEY.name, 30, root_hash(session, 30)).sign(LOG_KEY)
        refused = witness.add_checkpoint(AddCheckpoint(genuine.size, proof, forged).encode())
        assert refused.status_code == 422, refused.text
        fork = witness.add_checkpoint(AddCheckpoint(genuine.size, (), same_size).encode())
        assert fork.status_code == 409 and "another root" in fork.text
        stale = witness.add_checkpoint(AddCheckpoint(0, (), forged).encode())
        assert stale.status_code == 409
        assert stale.text == "30\n" and stale.headers["content-type"] == "text/x.tlog.size"
    finally:
        witness.stop()


def test_the_journal_is_outside_the_database_and_only_grows(
    open_audit: AuditFactory, tmp_path: Path
) -> None:
    log = open_audit()
    _thirty_decisions_in_six_checkpoints(log)
    journal = CheckpointJournal(tmp_path / "outside-the-database" / "checkpoints.jsonl")
    sizes = [record.size for record in journal.records()]
    assert sizes == sorted(sizes) and {5, 10, 15, 20, 25, 30} <= set(sizes)


def test_the_checkpoint_journal_is_served_for_outsiders_to_keep(api: Api) -> None:
    _thirty_decisions_in_six_checkpoints(api.log)
    served = api.get("/v1/audit/log/checkpoints", "author-token")
    assert served.status_code == 200
    notes = [line for line in served.text.splitlines() if line]
    assert len(notes) >= 6
    note = json.loads(notes[-1])["note"]
    verify_log(api.log.db, LOG_KEY.verifier, trusted=[note])


def test_a_replica_taking_the_signer_over_refuses_a_history_rewritten_while_it_stood_by(
    open_audit: AuditFactory, database_url: str, tmp_path: Path
) -> None:
    """Replicas keep their own journals: the one taking the signer over proves the database's
    tree against its own journal first, so a rewrite made while it stood by is not signed."""
    first = open_audit(journal=tmp_path / "replica-a" / "checkpoints.jsonl")
    second = open_audit(journal=tmp_path / "replica-b" / "checkpoints.jsonl")
    _thirty_decisions_in_six_checkpoints(first)
    carried = second.checkpoint_signer.take_over()
    assert carried.size == 30
    kept = second.journal.latest()
    assert kept is not None and kept.size == 30, "the takeover carried the chain into its journal"
    second.checkpoint_signer.stand_by()
    first.ingest_upload(gzip_batch([decision_event(time=T0 + timedelta(hours=1))]), "gzip")
    assert first.checkpoint().size == 31

    rewrite_leaf(database_url, 16, _flip)
    assert delete_checkpoints_above(database_url, 16) == 4
    first.checkpoint_signer.stand_by()  # the first replica dies; the second takes over
    with pytest.raises(CheckpointChainError, match="does not extend the last signed checkpoint"):
        second.checkpoint_signer.take_over()
    assert second.metrics.gauge("chain_broken") == 1.0
    latest = second.latest_checkpoint()
    assert latest is not None and latest.size == 15, "nothing was signed over the rewrite"
