"""Exporting evidence: one control's records in a period, proven and packed for offline checks."""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from nexus_audit import storage
from nexus_audit.catalog import Control
from nexus_audit.cosignature import verified_cosignatures
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
    POLICY_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    ArchiveWriter,
    RecordCounts,
    json_file,
    proof_name,
    sha256_hex,
)
from nexus_audit.evidence.report import REPORT_ROW_LIMIT, report_html
from nexus_audit.oscal import ControlEvidence, assessment_results
from nexus_audit.proof import TlogProof
from nexus_audit.service import AuditLog
from nexus_contract.errors import NexusError

__all__ = ["EvidenceScopeError", "ExportSummary", "export_archive"]


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
    cosigners: tuple[str, ...] = ()


class EvidenceScopeError(NexusError):
    """The export asks for more than the caller may see (every tenant, say)."""


_PROOF_BATCH = 200
_PAGE = 500


def export_archive(
    log: AuditLog,
    *,
    framework: str,
    control: str,
    since: datetime,
    until: datetime,
    out: Path,
    actor: str,
    tenant: str | None = None,
) -> ExportSummary:
    """Write the evidence archive for ``control`` of ``framework`` in ``[since, until)`` to ``out``.

    ``control`` is the framework-local id (``CC6.1``) or the qualified one
    (``SOC2:CC6.1``). ``tenant`` scopes the records (its decisions and events,
    and the control plane's own events), and with them the payloads and salts;
    None exports every tenant (the caller decides who may). The export is
    itself logged (``evidence.exported``), a fresh checkpoint is signed so
    every record and the export are covered, and, with witnesses configured,
    it is cosigned to the policy's quorum, which the archive carries
    (``witness-policy.txt``). Records, proofs and the archive are streamed
    through temporary files: memory stays bounded for any period.
    """
    found = framework_of(log.catalogs, framework)
    local_id = control.split(":", 1)[1] if control.upper().startswith(f"{found.key}:") else control
    target = log.catalogs.control(f"{found.key}:{local_id}")
    if until <= since:
        raise ValueError("the period is empty: until must be after since")
    generated = log.now()
    with tempfile.TemporaryDirectory(prefix="nexus-export-", dir=out.parent) as work:
        records_path = Path(work) / RECORDS_FILE
        counts, log_size, indexes_path, sample = _write_records(
            log, target.qualified_id, since, until, tenant, records_path
        )
        records_sha = _file_sha256(records_path)
        period = {"since": format_time(since), "until": format_time(until)}
        scope = {"tenant": tenant} if tenant is not None else {"all_tenants": True}
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
                "scope": scope,
                "summary": counts.as_dict(),
                "log": {"origin": log.origin, "size_at_export": log_size},
            }
        )
        leaves, entries, statuses = sample
        report_file = report_html(
            framework=found,
            control=target,
            period=period,
            counts=counts,
            entries=entries,
            leaves=leaves,
            statuses=statuses,
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
                    (CHECKPOINT_FILE, "The signed, witnessed checkpoint all proofs are against."),
                ],
            )
        )
        policy_file = None if log.witnesses is None else log.witnesses.policy.encode().encode()
        content_hashes = {
            RECORDS_FILE: records_sha,
            CONTROLS_FILE: sha256_hex(controls_file),
            REPORT_FILE: sha256_hex(report_file),
            OSCAL_FILE: sha256_hex(oscal_file),
        }
        if policy_file is not None:
            content_hashes[POLICY_FILE] = sha256_hex(policy_file)
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
                "tenant": tenant if tenant is not None else "*",
                "records": counts.records,
                "files": content_hashes,
            },
        )
        event_index = log.append_event(event)
        assert event_index is not None
        signed = log.witnessed_checkpoint()
        note = signed.published_note

        partial = out.with_name(out.name + ".partial")
        manifest = _Manifest(Path(work) / MANIFEST_FILE)
        with ArchiveWriter(partial) as archive:
            for name, data in (
                (CHECKPOINT_FILE, note.encode()),
                (LOG_KEY_FILE, (str(log.verifier) + "\n").encode()),
                (CONTROLS_FILE, controls_file),
            ):
                manifest[name] = archive.add_bytes(name, data)
            manifest[RECORDS_FILE] = archive.add_file(RECORDS_FILE, records_path)
            for name, data in (
                (REPORT_FILE, report_file),
                (OSCAL_FILE, oscal_file),
                (
                    EXPORT_EVENT_FILE,
                    json_file({"index": event_index, "entry": event.leaf.entry.decode()}),
                ),
                *(((POLICY_FILE, policy_file),) if policy_file is not None else ()),
            ):
                manifest[name] = archive.add_bytes(name, data)
            for index, proof in _proofs(log, indexes_path, event_index, signed.size, note):
                manifest[proof_name(index)] = archive.add_bytes(proof_name(index), proof)
            archive.add_file(MANIFEST_FILE, manifest.close())
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
        sha256=_file_sha256(out),
        cosigners=_cosigners(log, note),
    )


def _write_records(
    log: AuditLog,
    control: str,
    since: datetime,
    until: datetime,
    tenant: str | None,
    path: Path,
) -> tuple[
    RecordCounts,
    int,
    Path,
    tuple[list[storage.StoredLeaf], list[dict[str, Any]], list[str]],
]:
    """Stream the scope's records to ``path`` (and their indexes beside it), page by page."""
    counts = RecordCounts()
    leaves: list[storage.StoredLeaf] = []
    entries: list[dict[str, Any]] = []
    statuses: list[str] = []
    indexes_path = path.with_suffix(".indexes")
    log_size = 0
    with path.open("wb") as records, indexes_path.open("w") as ids:
        for size, page in log.evidence_pages(control, since, until, tenant=tenant, page=_PAGE):
            log_size = size
            for leaf, opened in page:
                entry = orjson.loads(leaf.entry)
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
                records.write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n")
                ids.write(f"{leaf.index}\n")
                if len(leaves) < REPORT_ROW_LIMIT:
                    leaves.append(leaf)
                    entries.append(entry)
                    statuses.append(status)
    if log_size == 0:
        log_size = log.size()
    return counts, log_size, indexes_path, (leaves, entries, statuses)


def _proofs(
    log: AuditLog, indexes_path: Path, event_index: int, size: int, note: str
) -> Iterator[tuple[int, bytes]]:
    """A tlog-proof for every record (then the export event), batched per query."""

    def indexes() -> Iterator[int]:
        with indexes_path.open() as handle:
            for line in handle:
                yield int(line)
        yield event_index

    stream = indexes()
    while batch := list(itertools.islice(stream, _PROOF_BATCH)):
        proofs = log.inclusion_proofs(batch, size)
        for index in batch:
            yield index, TlogProof(index, proofs[index], note).encode().encode()


class _Manifest:
    """manifest.json written entry by entry to a file: memory stays flat for any record count."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle = path.open("wb")
        self._handle.write(b'{\n  "algorithm": "sha256",\n  "files": {')
        self._first = True

    def __setitem__(self, name: str, digest: str) -> None:
        separator = b"\n    " if self._first else b",\n    "
        self._first = False
        self._handle.write(separator + orjson.dumps(name) + b": " + orjson.dumps(digest))

    def close(self) -> Path:
        tail = b'\n  },\n  "format": ' + orjson.dumps(ARCHIVE_FORMAT) + b"\n}\n"
        self._handle.write(tail)
        self._handle.close()
        return self._path


def _cosigners(log: AuditLog, note: str) -> tuple[str, ...]:
    if log.witnesses is None:
        return ()
    found = verified_cosignatures(note, log.witnesses.keys)
    by_key = {w.key.name: w.name for w in log.witnesses.policy.witnesses}
    return tuple(sorted(by_key[name] for name in found))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _control_dict(control: Control) -> dict[str, str]:
    return {
        "id": control.id,
        "qualified_id": control.qualified_id,
        "group": control.group,
        "title": control.title,
    }
