"""Witnessing with real peers: two of our witnesses and transparency-dev's omniwitness.

Each witness is its own process with its own key and storage; the log submits
every checkpoint with a consistency proof (C2SP tlog-witness) and keeps the
``cosignature/v1`` lines; the evidence archive carries them with the
tlog-policy, and ``verify_archive`` enforces its quorum offline.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from nexus_audit.evidence import EvidenceError, export_archive, verify_archive
from nexus_audit.evidence.format import tar_gz
from nexus_audit.policy import TlogPolicy
from nexus_audit.service import AuditLog
from nexus_audit.witness.client import WitnessPool
from tests.fixtures.witnesses import WitnessProcess, nexus_witness, omniwitness
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, events, gzip_batch


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessProcess]]:
    started: list[WitnessProcess] = []
    try:
        for make, name in (
            (nexus_witness, "witness.eu.example/w1"),
            (nexus_witness, "witness.us.example/w2"),
            (omniwitness, "omniwitness.example/w3"),
        ):
            started.append(make(tmp_path / name.replace("/", "_"), name, LOG_KEY.verifier).start())
        yield started
    finally:
        for witness in started:
            witness.stop()


def policy_for(witnesses: list[WitnessProcess], quorum: int = 2) -> TlogPolicy:
    lines = [f"log {LOG_KEY.verifier}"]
    names = []
    for number, witness in enumerate(witnesses, start=1):
        names.append(f"w{number}")
        lines.append(f"witness w{number} {witness.key} {witness.url}")
    lines += [f"group main {quorum} {' '.join(names)}", "quorum main"]
    return TlogPolicy.parse("\n".join(lines) + "\n")


@pytest.fixture
def witnessed_log(audit_log: AuditLog, witnesses: list[WitnessProcess]) -> AuditLog:
    audit_log.witnesses = WitnessPool(policy_for(witnesses), audit_log.db)
    return audit_log


def test_each_checkpoint_is_cosigned_by_all_three_witnesses_omniwitness_among_them(
    witnessed_log: AuditLog,
) -> None:
    log = witnessed_log
    assert log.witnesses is not None
    for round_number in range(3):
        log.ingest_upload(gzip_batch(events(5, start=T0 + timedelta(minutes=round_number))), "gzip")
        result = log.witness(log.checkpoint())
        assert result.cosigners == ("w1", "w2", "w3"), result.outcomes
        checkpoint, names = log.witnesses.policy.verify(result.cosigned_note)
        assert checkpoint.size == 5 * (round_number + 1)
        assert names == {"w1", "w2", "w3"}
    latest = log.latest_checkpoint()
    assert latest is not None and latest.cosigned_note is not None
    assert latest.published_note.count("\u2014 ") == 4, "the log's signature and three cosignatures"
    assert log.journal.latest() is not None
    assert log.journal.latest().note == latest.cosigned_note  # type: ignore[union-attr]


def test_the_quorum_holds_with_one_witness_down_and_a_restarted_witness_catches_up(
    witnessed_log: AuditLog, witnesses: list[WitnessProcess]
) -> None:
    log = witnessed_log
    log.ingest_upload(gzip_batch(events(3)), "gzip")
    log.witness(log.checkpoint())
    witnesses[0].kill()
    log.ingest_upload(gzip_batch(events(3, start=T0 + timedelta(hours=1))), "gzip")
    result = log.witness(log.checkpoint())
    assert result.quorum_met and result.cosigners == ("w2", "w3")
    witnesses[0].start()
    log.ingest_upload(gzip_batch(events(3, start=T0 + timedelta(hours=2))), "gzip")
    again = log.witness(log.checkpoint())
    assert again.cosigners == ("w1", "w2", "w3"), "w1 is proven consistent from its own size"


def test_the_evidence_archive_carries_the_cosignatures_and_its_quorum_is_checked_offline(
    witnessed_log: AuditLog, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    log = witnessed_log
    log.ingest_upload(gzip_batch(events(6)), "gzip")
    out = tmp_path / "evidence.tar.gz"
    summary = export_archive(
        log,
        framework="soc2",
        control="CC6.1",
        since=T0 - timedelta(days=1),
        until=T0 + timedelta(days=1),
        out=out,
        actor="auditor",
        tenant="acme",
    )
    assert summary.cosigners == ("w1", "w2", "w3")
    verified = verify_archive(out, LOG_KEY.verifier, require_quorum=True)
    assert verified.cosigners == ("w1", "w2", "w3")
    assert verified.quorum == "2 of w1, w2, w3"

    stricter = policy_for(witnesses, quorum=3)
    assert verify_archive(out, LOG_KEY.verifier, policy=stricter).cosigners == ("w1", "w2", "w3")
    strangers = policy_for(
        [nexus_witness(tmp_path / "s", f"stranger.example/{n}", LOG_KEY.verifier) for n in "ab"]
    )
    with pytest.raises(EvidenceError, match="quorum"):
        verify_archive(out, LOG_KEY.verifier, policy=strangers)


def test_an_archive_whose_cosignatures_were_stripped_fails_its_quorum(
    witnessed_log: AuditLog, tmp_path: Path
) -> None:
    log = witnessed_log
    log.ingest_upload(gzip_batch(events(4)), "gzip")
    out = tmp_path / "evidence.tar.gz"
    export_archive(
        log,
        framework="soc2",
        control="CC6.1",
        since=T0 - timedelta(days=1),
        until=T0 + timedelta(days=1),
        out=out,
        actor="auditor",
        tenant="acme",
    )
    with tarfile.open(out, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    note = members["checkpoint.txt"].decode()
    stripped = note[: note.index("\n\n") + 2] + "".join(
        line
        for line in note[note.index("\n\n") + 2 :].splitlines(keepends=True)
        if line.startswith(f"\u2014 {LOG_KEY.name} ")
    )
    assert stripped != note
    rebuilt = {
        name: data.replace(note.encode(), stripped.encode()) for name, data in members.items()
    }
    manifest = json.loads(rebuilt["manifest.json"])
    for name, data in rebuilt.items():
        if name != "manifest.json":
            manifest["files"][name] = hashlib.sha256(data).hexdigest()
    rebuilt["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(EvidenceError, match="quorum"):
        verify_archive(tar_gz(rebuilt.items()), LOG_KEY.verifier)
