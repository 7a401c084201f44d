"""Exporting evidence: one control's records in a period, proven and packed for offline checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from nexus_audit import storage
from nexus_audit.catalog import Control
from nexus_audit.coverage import framework_of
from nexus_audit.entry import format_time
from nexus_audit.events import prepare_event
from nexus_audit.evidence.format import (
    ARCHIVE_FORMAT,
    CHECKPOINT_FILE,
    CONTROLS_FILE,
    EXPORT_EVENT,
    EXPORT_EVENT_FILE,
    INLINE_STATUS,
    LOG_KEY_FILE,
    MANIFEST_FILE,
    OSCAL_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    RecordCounts,
    json_file,
    proof_name,
    sha256_hex,
    tar_gz,
)
from nexus_audit.evidence.report import report_html
from nexus_audit.oscal import ControlEvidence, assessment_results
from nexus_audit.proof import TlogProof
from nexus_audit.service import AuditLog

__all__ = ["ExportSummary", "export_archive"]


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    framework: str
    control: str
    since: datetime
    until: datetime
    records: int
    checkpoint_size: int
    export_event_index: int
    sha256: str


def export_archive(
    log: AuditLog,
    *,
    framework: str,
    control: str,
    since: datetime,
    until: datetime,
    out: Path,
    actor: str,
) -> ExportSummary:
    """Write the evidence archive for ``control`` of ``framework`` in ``[since, until)`` to ``out``.

    ``control`` is the framework-local id (``CC6.1``) or the qualified one
    (``SOC2:CC6.1``). The export is itself logged (``evidence.exported``) and
    a fresh checkpoint is signed so every record and the export are covered.
    """
    found = framework_of(log.catalogs, framework)
    local_id = control.split(":", 1)[1] if control.upper().startswith(f"{found.key}:") else control
    target = log.catalogs.control(f"{found.key}:{local_id}")
    if until <= since:
        raise ValueError("the period is empty: until must be after since")
    generated = log.now()

    with log.db.session() as session:
        log_size = storage.tree_size(session)
        leaves = list(
            storage.leaves_for_control(session, target.qualified_id, since, until, below=log_size)
        )
        entries = [orjson.loads(leaf.entry) for leaf in leaves]
        sealed = [
            leaf.index
            for leaf, entry in zip(leaves, entries, strict=True)
            if "payload_commitment" in entry
        ]
        payloads = log.vault.open(session, sealed)

    counts = RecordCounts()
    lines = []
    for leaf in leaves:
        opened = payloads.get(leaf.index)
        status = INLINE_STATUS if opened is None else str(opened.status)
        counts.records += 1
        counts.payloads[status] += 1
        if leaf.kind == "event":
            counts.events += 1
        elif leaf.allowed:
            counts.allowed += 1
        else:
            counts.denied += 1
        plaintext = None if opened is None else opened.plaintext
        salt = None if opened is None else opened.salt
        record = {
            "index": leaf.index,
            "leaf_hash": leaf.leaf_hash.hex(),
            "entry": leaf.entry.decode(),
            "payload_status": status,
            "payload": None if plaintext is None else plaintext.decode(),
            "salt": None if salt is None else salt.hex(),
        }
        lines.append(orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n")
    records_file = b"".join(lines)

    period = {"since": format_time(since), "until": format_time(until)}
    controls_file = json_file(
        {
            "format": ARCHIVE_FORMAT,
            "framework": {"key": found.key, "name": found.name, "edition": found.edition},
            "control": _control_dict(target),
            "related": [
                _control_dict(log.catalogs.control(related))
                for related in sorted(log.catalogs.related(target.qualified_id))
            ],
            "period": period,
            "summary": counts.as_dict(),
            "log": {"origin": log.origin, "size_at_export": log_size},
        }
    )
    report_file = report_html(
        framework=found,
        control=target,
        period=period,
        counts=counts,
        entries=entries,
        leaves=leaves,
        statuses=[
            INLINE_STATUS if payloads.get(leaf.index) is None else str(payloads[leaf.index].status)
            for leaf in leaves
        ],
        origin=log.origin,
        verifier=str(log.verifier),
        generated=generated,
        log_size=log_size,
    )
    oscal_file = json_file(
        assessment_results(
            framework=found,
            evidence=[
                ControlEvidence(
                    target, counts.records, counts.allowed, counts.denied, counts.events
                )
            ],
            since=since,
            until=until,
            generated=generated,
            origin=log.origin,
            log_size=log_size,
            evidence_files=[
                (RECORDS_FILE, "Log records (entries, payloads where still readable)."),
                ("proofs/", "A C2SP tlog-proof of inclusion for every record."),
                (CHECKPOINT_FILE, "The signed checkpoint all proofs are against."),
            ],
        )
    )
    content = {
        RECORDS_FILE: records_file,
        CONTROLS_FILE: controls_file,
        REPORT_FILE: report_file,
        OSCAL_FILE: oscal_file,
    }
    event = prepare_event(
        event_type=EXPORT_EVENT,
        actor=actor,
        time=generated,
        payload={
            "format": ARCHIVE_FORMAT,
            "framework": found.key,
            "control": target.id,
            "since": period["since"],
            "until": period["until"],
            "records": counts.records,
            "files": {name: sha256_hex(data) for name, data in content.items()},
        },
    )
    with log.db.session() as session:
        appended = log.append_in(session, [event])
    log.after_append(appended.size)
    event_index = appended.indexes[0]
    assert event_index is not None
    signed = log.checkpoint()

    members: list[tuple[str, bytes]] = [
        (CHECKPOINT_FILE, signed.note.encode()),
        (LOG_KEY_FILE, (str(log.verifier) + "\n").encode()),
        (CONTROLS_FILE, controls_file),
        (RECORDS_FILE, records_file),
        (REPORT_FILE, report_file),
        (OSCAL_FILE, oscal_file),
        (
            EXPORT_EVENT_FILE,
            json_file({"index": event_index, "entry": event.leaf.entry.decode()}),
        ),
    ]
    with log.db.session() as session:
        for index in [leaf.index for leaf in leaves] + [event_index]:
            hashes = storage.inclusion_proof(session, index, signed.size)
            proof = TlogProof(index, hashes, signed.note).encode()
            members.append((proof_name(index), proof.encode()))
    manifest = {
        "format": ARCHIVE_FORMAT,
        "algorithm": "sha256",
        "files": {name: sha256_hex(data) for name, data in members},
    }
    members.append((MANIFEST_FILE, json_file(manifest)))

    archive = tar_gz(members)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(archive)
    partial.replace(out)
    return ExportSummary(
        path=out,
        framework=found.key,
        control=target.id,
        since=since,
        until=until,
        records=counts.records,
        checkpoint_size=signed.size,
        export_event_index=event_index,
        sha256=sha256_hex(archive),
    )


def _control_dict(control: Control) -> dict[str, str]:
    return {
        "id": control.id,
        "qualified_id": control.qualified_id,
        "group": control.group,
        "title": control.title,
    }
