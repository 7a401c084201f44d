"""The audit and evidence commands, straight on the audit database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_audit.cli import audit_app, evidence_app
from nexus_audit.service import AuditLog
from nexus_audit.settings import AuditSettings
from tests.unit.audit.harness import FACTS
from tests.unit.audit.opa_events import events, gzip_batch

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEXUS_AUDIT_DATABASE_URL", f"sqlite:///{tmp_path}/audit.db")
    monkeypatch.setenv("NEXUS_AUDIT_LOG_KEY_FILE", str(tmp_path / "keys" / "log.key"))
    monkeypatch.setenv("NEXUS_AUDIT_MASTER_KEY_FILE", str(tmp_path / "keys" / "master.key"))
    result = runner.invoke(audit_app, ["init-keys"])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("NEXUS_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("NEXUS_AUDIT_DECISION_MAX_AGE_S", str(10 * 365 * 86400))
    log = AuditLog.from_settings(AuditSettings())
    log.use_facts(FACTS)
    batch = events(8)
    log.ingest_upload(gzip_batch(batch), "gzip")
    log.checkpoint()
    log.close()
    (tmp_path / "first-decision").write_text(batch[0]["decision_id"])
    return tmp_path


def test_verify_passes_on_an_untouched_log(env: Path) -> None:
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "ok 8 leaves" in result.output


def test_verify_names_the_first_bad_leaf_and_exits_non_zero(env: Path) -> None:
    with sqlite3.connect(env / "audit.db") as db:
        db.execute(
            "UPDATE leaves SET entry = CAST(replace(entry, 'acme', 'acmf') AS BLOB) "
            "WHERE leaf_index >= 3"
        )
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert "leaf 3 (decision" in result.output


def test_prove_prints_a_tlog_proof(env: Path) -> None:
    decision = (env / "first-decision").read_text()
    result = runner.invoke(audit_app, ["prove", "--decision-id", decision])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("c2sp.org/tlog-proof@v1\nindex 0\n")


def test_checkpoint_prints_the_signed_note(env: Path) -> None:
    result = runner.invoke(audit_app, ["checkpoint"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("nexus.local/audit\n8\n")


def test_coverage_as_json_and_as_a_table(env: Path) -> None:
    args = ["coverage", "--framework", "soc2", "--since", "2026-11-01", "--until", "2026-12-01"]
    as_json = runner.invoke(audit_app, [*args, "--format", "json"])
    table = runner.invoke(audit_app, args)

    assert as_json.exit_code == table.exit_code == 0
    assert json.loads(as_json.output)["summary"]["with_evidence"] == 1
    assert "CC6.1" in table.output and "1 of 61 controls have evidence" in table.output
    unknown = runner.invoke(
        audit_app,
        ["coverage", "--framework", "nist80053", "--since", "2026-11-01", "--until", "2026-12-01"],
    )
    assert unknown.exit_code == 2


def test_erase_goes_through_the_api_with_a_token_and_purge_works_offline(env: Path) -> None:
    erased = runner.invoke(audit_app, ["erase", "--tenant", "acme"])
    purged = runner.invoke(audit_app, ["purge", "--days", "0"])
    assert erased.exit_code == 2
    assert "NEXUS_ADMIN_TOKEN" in erased.output
    assert purged.exit_code == 0, purged.output
    assert "acme: 8 payload(s)" in purged.output
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0


def test_purge_takes_audit_retention_from_the_bundle_data(env: Path) -> None:
    data = {"nexus": {"config": {"retention": {
        "*": {"audit-payloads": {"days": 400, "delete": "hard", "legal_hold": False}},
        "acme": {"audit-payloads": {"days": 1, "delete": "hard", "legal_hold": False}},
    }}}}  # fmt: skip
    (env / "data.json").write_text(json.dumps(data))
    result = runner.invoke(audit_app, ["purge", "--retention-file", str(env / "data.json")])
    assert result.exit_code == 0, result.output
    assert "acme: 8 payload(s) older than 1 days purged" in result.output


def test_evidence_export_then_verify_with_the_public_key_file(env: Path) -> None:
    archive = env / "cc61.tar.gz"
    exported = runner.invoke(
        evidence_app,
        [
            "export",
            "--framework",
            "soc2",
            "--control",
            "CC6.1",
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-01",
            "--out",
            str(archive),
            "--tenant",
            "acme",
        ],
    )
    assert exported.exit_code == 0, exported.output
    key = str(env / "keys" / "log.key.pub")
    verified = runner.invoke(evidence_app, ["verify", str(archive), "--key", key])
    assert verified.exit_code == 0, verified.output
    assert "ok 8 record(s) of SOC2:CC6.1" in verified.output

    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    broken = runner.invoke(evidence_app, ["verify", str(archive), "--key", key])
    assert broken.exit_code == 1
    assert "FAILED" in broken.output
