"""Evidence export: one archive per control and period, verifiable offline, tamper-evident."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from nexus_audit.catalog import UnknownControlError
from nexus_audit.coverage import UnknownFrameworkError
from nexus_audit.events import ControlEvent
from nexus_audit.evidence import EvidenceError, export_archive, verify_archive
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog
from tests.unit.audit.harness import LOG_KEY, erase
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch
from tests.unit.audit.oscal_schema import assessment_results_validator

SINCE, UNTIL = T0, T0 + timedelta(days=1)
KEY = str(LOG_KEY.verifier)


@pytest.fixture
def populated(audit_log: AuditLog) -> AuditLog:
    """Decisions evidencing SOC2:CC6.1 in and around the period, one subject erased, events."""
    inside = [decision_event(time=T0 + timedelta(minutes=n), allowed=n % 3 == 0) for n in range(8)]
    alice = [decision_event(time=T0 + timedelta(hours=2), subject="alice")]
    outside = [
        decision_event(time=T0 - timedelta(seconds=1)),
        decision_event(time=UNTIL),
    ]
    unrelated = [decision_event(time=T0 + timedelta(hours=3), controls=("GDPR:Art.32",))]
    tricky = [
        decision_event(
            time=T0 + timedelta(hours=4), method="POST", path="/v1/tools/<img src=x>:invoke"
        )
    ]
    audit_log.ingest_upload(gzip_batch(inside + alice + outside + unrelated + tricky), "gzip")
    audit_log.append_events(
        [
            ControlEvent(
                id=1,
                type="bundle.published",
                actor="alice@nexus.example",
                created_at=T0 + timedelta(hours=5),
                payload={"bundle": "gateway", "revision": "r1"},
            )
        ]
    )
    erase(audit_log, tenant="acme", subject="alice", actor="dpo")
    return audit_log


def _export(log: AuditLog, tmp_path: Path, control: str = "CC6.1") -> Path:
    out = tmp_path / f"evidence-{control}.tar.gz"
    export_archive(
        log, framework="soc2", control=control, since=SINCE, until=UNTIL, out=out, actor="auditor"
    )
    return out


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _rewrite(archive: Path, target: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    files = _members(archive)
    change(files)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target.write_bytes(raw.getvalue())
    return target


def _flip(data: bytes, offset: int | None = None) -> bytes:
    position = len(data) // 2 if offset is None else offset
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def _remanifest(files: dict[str, bytes]) -> None:
    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {
        name: hashlib.sha256(data).hexdigest()
        for name, data in files.items()
        if name != "manifest.json"
    }
    files["manifest.json"] = json.dumps(manifest).encode()


def test_an_export_verifies_offline_with_only_the_archive_and_the_key(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)
    verified = verify_archive(archive, KEY)

    assert (verified.framework, verified.control, verified.records) == ("SOC2", "CC6.1", 10)
    assert verified.checkpoint.size == populated.size()
    records = [orjson.loads(line) for line in _members(archive)["records.jsonl"].splitlines()]
    assert [r["payload_status"] for r in records].count("erased") == 1
    assert [r["payload_status"] for r in records].count("present") == 9
    summary = json.loads(_members(archive)["controls.json"])["summary"]
    assert (summary["allowed"], summary["denied"], summary["events"]) == (3, 7, 0)


def test_the_archive_lists_every_file_in_a_fixed_order_with_zeroed_metadata(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:7] == [
        "checkpoint.txt",
        "log-key.pub",
        "controls.json",
        "records.jsonl",
        "report.html",
        "assessment-results.json",
        "export-event.json",
    ]
    assert names[-1] == "manifest.json"
    proofs = [name for name in names if name.startswith("proofs/")]
    assert proofs == sorted(proofs, key=lambda n: int(n.split("/")[1].split(".")[0]))
    assert len(proofs) == 11
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    with gzip.open(archive) as plain:
        assert plain.read()
    manifest = json.loads(_members(archive)["manifest.json"])
    assert set(manifest["files"]) == set(names) - {"manifest.json"}


def test_the_export_is_logged_and_fixes_the_content_hashes(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)
    files = _members(archive)
    event = json.loads(files["export-event.json"])
    entry = orjson.loads(populated.leaf(index=event["index"]).entry)

    assert entry["type"] == "evidence.exported"
    assert (
        entry["payload"]["files"]["report.html"] == hashlib.sha256(files["report.html"]).hexdigest()
    )
    assert entry["actor"] == "auditor"


def test_events_are_evidence_too(populated: AuditLog, tmp_path: Path) -> None:
    archive = _export(populated, tmp_path, control="CC8.1")
    verified = verify_archive(archive, KEY)
    records = [orjson.loads(line) for line in _members(archive)["records.jsonl"].splitlines()]
    assert verified.records == 1
    assert records[0]["payload_status"] == "inline"


@pytest.mark.parametrize(
    "name",
    [
        "checkpoint.txt",
        "log-key.pub",
        "controls.json",
        "records.jsonl",
        "report.html",
        "assessment-results.json",
        "export-event.json",
        "proofs/",
        "manifest.json",
    ],
)
def test_a_flipped_byte_in_any_file_fails_naming_the_file(
    populated: AuditLog, tmp_path: Path, name: str
) -> None:
    archive = _export(populated, tmp_path)
    target = name
    if name == "proofs/":
        target = sorted(n for n in _members(archive) if n.startswith("proofs/"))[3]

    def flip(files: dict[str, bytes]) -> None:
        files[target] = _flip(files[target])

    tampered = _rewrite(archive, tmp_path / "tampered.tar.gz", flip)
    with pytest.raises(EvidenceError) as caught:
        verify_archive(tampered, KEY)
    assert target in str(caught.value)


def test_a_record_rewritten_with_a_recomputed_manifest_still_fails(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)

    def forge(files: dict[str, bytes]) -> None:
        files["records.jsonl"] = files["records.jsonl"].replace(
            b'\\"allowed\\":false', b'\\"allowed\\":true', 1
        )
        _remanifest(files)

    with pytest.raises(EvidenceError, match=r"records\.jsonl: differs from the SHA-256 the log"):
        verify_archive(_rewrite(archive, tmp_path / "forged.tar.gz", forge), KEY)


def test_a_report_rewritten_with_a_recomputed_manifest_still_fails(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)

    def forge(files: dict[str, bytes]) -> None:
        files["report.html"] = files["report.html"].replace(b"Records", b"Recorbs")
        _remanifest(files)

    with pytest.raises(EvidenceError) as caught:
        verify_archive(_rewrite(archive, tmp_path / "forged.tar.gz", forge), KEY)
    assert caught.value.file == "report.html"


def test_a_swapped_proof_fails_naming_the_proof_and_the_record(
    populated: AuditLog, tmp_path: Path
) -> None:
    archive = _export(populated, tmp_path)
    first = orjson.loads(_members(archive)["records.jsonl"].splitlines()[0])

    def swap(files: dict[str, bytes]) -> None:
        proofs = sorted(n for n in files if n.startswith("proofs/"))
        files[proofs[0]] = files[proofs[1]]
        _remanifest(files)

    with pytest.raises(EvidenceError) as caught:
        verify_archive(_rewrite(archive, tmp_path / "swapped.tar.gz", swap), KEY)
    decision = orjson.loads(first["entry"])["decision_id"]
    assert caught.value.file == f"proofs/{first['index']}.tlog-proof"
    assert caught.value.record == f"line 1 (leaf {first['index']}, decision {decision})"


def test_an_archive_under_another_key_fails(populated: AuditLog, tmp_path: Path) -> None:
    archive = _export(populated, tmp_path)
    other = str(Signer("nexus.local/audit", bytes(32)).verifier)
    with pytest.raises(EvidenceError, match=r"log-key\.pub"):
        verify_archive(archive, other)


def test_a_corrupt_archive_fails_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(EvidenceError, match=r"broken\.tar\.gz: not a readable"):
        verify_archive(broken, KEY)


def test_the_report_escapes_what_it_shows(populated: AuditLog, tmp_path: Path) -> None:
    report = _members(_export(populated, tmp_path))["report.html"].decode()
    assert "/v1/tools/{id}:invoke" in report, "the path is templated before it is a leaf"
    assert "<img" not in report


def test_an_unknown_framework_or_control_is_refused(populated: AuditLog, tmp_path: Path) -> None:
    with pytest.raises(UnknownFrameworkError):
        export_archive(
            populated,
            framework="nist80053",
            control="x",
            since=SINCE,
            until=UNTIL,
            out=tmp_path / "x",
            actor="a",
        )
    with pytest.raises(UnknownControlError):
        export_archive(
            populated,
            framework="soc2",
            control="CC9.9",
            since=SINCE,
            until=UNTIL,
            out=tmp_path / "x",
            actor="a",
        )


def test_the_oscal_document_validates_against_nists_schema(
    populated: AuditLog, tmp_path: Path
) -> None:
    validator = assessment_results_validator()
    document = json.loads(_members(_export(populated, tmp_path))["assessment-results.json"])

    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    results = document["assessment-results"]
    assert results["metadata"]["oscal-version"] == "1.1.2"
    finding = results["results"][0]["findings"][0]
    assert finding["target"]["target-id"] == "CC6.1"
    assert finding["target"]["status"]["state"] == "satisfied"


def test_the_schema_check_itself_rejects_a_broken_document(
    populated: AuditLog, tmp_path: Path
) -> None:
    validator = assessment_results_validator()
    document = json.loads(_members(_export(populated, tmp_path))["assessment-results.json"])
    finding = document["assessment-results"]["results"][0]["findings"][0]
    finding["target"]["target-id"] = "6.1 with spaces"
    del document["assessment-results"]["metadata"]["title"]
    messages = [e.message for e in validator.iter_errors(document)]
    assert any("'title' is a required property" in m for m in messages)
    assert any("does not match" in m for m in messages)


def test_an_empty_period_exports_a_verifiable_not_satisfied_finding(
    populated: AuditLog, tmp_path: Path
) -> None:
    out = tmp_path / "empty.tar.gz"
    export_archive(
        populated, framework="gdpr", control="Art.20", since=SINCE, until=UNTIL, out=out, actor="a"
    )
    assert verify_archive(out, KEY).records == 0
    document = json.loads(_members(out)["assessment-results.json"])
    state = document["assessment-results"]["results"][0]["findings"][0]["target"]["status"]
    assert state["state"] == "not-satisfied"
    assert not list(assessment_results_validator().iter_errors(document))
