"""Evidence packages: one archive per control and period that anyone can verify offline.

The archive (``.tar.gz``; members in a fixed order, zeroed owners and times)
holds:

``checkpoint.txt``
    the signed C2SP checkpoint every proof is against;
``log-key.pub``
    the log's verifier key (a convenience: verify with a key you obtained
    independently);
``controls.json``
    the control, its framework, related controls, the period and summary counts;
``records.jsonl``
    one record per leaf: its index, leaf hash, exact entry text, and the
    payload (exact canonical text and salt) while it can still be read, else
    its status (``erased``, ``purged``; ``inline`` for events that carry it);
``report.html``
    the same for people;
``assessment-results.json``
    OSCAL 1.1.2 assessment results (`nexus_audit.oscal`);
``export-event.json``
    the ``evidence.exported`` leaf appended by this export, which records the
    SHA-256 of the four files above;
``proofs/<index>.tlog-proof``
    a C2SP tlog-proof for every record and for the export event;
``manifest.json``
    the SHA-256 of every other file.

The manifest catches any altered byte and names the file. It is not signed,
but it need not be: the records and the export event are proven against the
signed checkpoint, and the export event, in the log itself, fixes the hashes
of the content files, so rewriting a file and its manifest line still fails.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from nexus_audit import storage
from nexus_audit.catalog import Control, Framework
from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.coverage import framework_of
from nexus_audit.entry import commitment, format_time
from nexus_audit.events import prepare_event
from nexus_audit.merkle import MerkleError
from nexus_audit.note import MalformedKeyError, NoteError, Verifier
from nexus_audit.oscal import ControlEvidence, assessment_results
from nexus_audit.payloads import PayloadStatus
from nexus_audit.proof import ProofError, TlogProof
from nexus_audit.service import AuditLog

__all__ = [
    "ARCHIVE_FORMAT",
    "CHECKPOINT_FILE",
    "CONTROLS_FILE",
    "EXPORT_EVENT",
    "EXPORT_EVENT_FILE",
    "LOG_KEY_FILE",
    "MANIFEST_FILE",
    "OSCAL_FILE",
    "RECORDS_FILE",
    "REPORT_FILE",
    "EvidenceError",
    "ExportSummary",
    "VerifiedEvidence",
    "export",
    "verify",
]

ARCHIVE_FORMAT = "nexus-evidence/v1"
EXPORT_EVENT = "evidence.exported"

CHECKPOINT_FILE = "checkpoint.txt"
LOG_KEY_FILE = "log-key.pub"
CONTROLS_FILE = "controls.json"
RECORDS_FILE = "records.jsonl"
REPORT_FILE = "report.html"
OSCAL_FILE = "assessment-results.json"
EXPORT_EVENT_FILE = "export-event.json"
MANIFEST_FILE = "manifest.json"
PROOFS_DIR = "proofs/"

CONTENT_FILES = (RECORDS_FILE, CONTROLS_FILE, REPORT_FILE, OSCAL_FILE)
"""Files whose SHA-256 the export event records in the log."""

REPORT_ROW_LIMIT = 2000
"""Records listed one by one in report.html; records.jsonl always holds all of them."""

_MAX_MEMBER_BYTES = 1 << 31
_INLINE = "inline"


class EvidenceError(Exception):
    """An evidence archive does not verify. ``file`` and ``record`` say where."""

    def __init__(self, file: str, problem: str, *, record: str | None = None) -> None:
        where = file if record is None else f"{file}, {record}"
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.record = record
        self.problem = problem


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


@dataclass(frozen=True)
class VerifiedEvidence:
    """What a verified archive proves: these records are in the log the key signs."""

    framework: str
    control: str
    since: str
    until: str
    records: int
    checkpoint: Checkpoint
    export_event_index: int


# --- export ------------------------------------------------------------------


@dataclass
class _Counts:
    records: int = 0
    allowed: int = 0
    denied: int = 0
    events: int = 0
    payloads: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys([*map(str, PayloadStatus), _INLINE], 0)
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "decisions": self.allowed + self.denied,
            "allowed": self.allowed,
            "denied": self.denied,
            "events": self.events,
            "payloads": dict(self.payloads),
        }


def export(
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

    counts = _Counts()
    lines = []
    for leaf in leaves:
        opened = payloads.get(leaf.index)
        status = _INLINE if opened is None else str(opened.status)
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
    controls_file = _json_file(
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
    report_file = _report_html(
        framework=found,
        control=target,
        period=period,
        counts=counts,
        entries=entries,
        leaves=leaves,
        statuses=[
            _INLINE if payloads.get(leaf.index) is None else str(payloads[leaf.index].status)
            for leaf in leaves
        ],
        origin=log.origin,
        verifier=str(log.verifier),
        generated=generated,
        log_size=log_size,
    )
    oscal_file = _json_file(
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
            "files": {name: _sha256(data) for name, data in content.items()},
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
            _json_file({"index": event_index, "entry": event.leaf.entry.decode()}),
        ),
    ]
    with log.db.session() as session:
        for index in [leaf.index for leaf in leaves] + [event_index]:
            hashes = storage.inclusion_proof(session, index, signed.size)
            proof = TlogProof(index, hashes, signed.note).encode()
            members.append((_proof_name(index), proof.encode()))
    manifest = {
        "format": ARCHIVE_FORMAT,
        "algorithm": "sha256",
        "files": {name: _sha256(data) for name, data in members},
    }
    members.append((MANIFEST_FILE, _json_file(manifest)))

    archive = _tar_gz(members)
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
        sha256=_sha256(archive),
    )


def _control_dict(control: Control) -> dict[str, str]:
    return {
        "id": control.id,
        "qualified_id": control.qualified_id,
        "group": control.group,
        "title": control.title,
    }


def _json_file(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _proof_name(index: int) -> str:
    return f"{PROOFS_DIR}{index}.tlog-proof"


def _tar_gz(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A reproducible tar.gz: members in the given order, no owners, times or modes of ours."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# --- the human-readable report -------------------------------------------------


def _report_html(
    *,
    framework: Framework,
    control: Control,
    period: Mapping[str, str],
    counts: _Counts,
    entries: Sequence[Mapping[str, Any]],
    leaves: Sequence[storage.StoredLeaf],
    statuses: Sequence[str],
    origin: str,
    verifier: str,
    generated: datetime,
    log_size: int,
) -> bytes:
    e = html.escape
    summary = counts.as_dict()
    rows = []
    for leaf, entry, status in list(zip(leaves, entries, statuses, strict=True))[:REPORT_ROW_LIMIT]:
        found = entry.get("outcome")
        outcome: Mapping[str, Any] = found if isinstance(found, dict) else {}
        if leaf.kind == "event":
            what = f"event {entry.get('type', '')}"
            result = ""
        else:
            what = f"{entry.get('method', '')} {entry.get('http_path', '')}"
            result = ("allowed" if outcome.get("allowed") else "denied") + (
                f" ({outcome.get('http_status')})" if outcome.get("http_status") else ""
            )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{e(str(cell))}</td>"
                for cell in (
                    leaf.index,
                    entry.get("time", ""),
                    entry.get("decision_id") or entry.get("event_id", ""),
                    entry.get("tenant", entry.get("actor", "")),
                    what,
                    result,
                    ", ".join(entry.get("controls", [])),
                    status,
                )
            )
            + "</tr>"
        )
    omitted = counts.records - len(rows)
    more = f"<p>{omitted} more record(s) are in <code>{RECORDS_FILE}</code>.</p>" if omitted else ""
    summary_rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(str(value))}</td></tr>"
        for label, value in (
            ("Records", summary["records"]),
            ("Decisions allowed", summary["allowed"]),
            ("Decisions denied", summary["denied"]),
            ("Events", summary["events"]),
            *((f"Payloads {name}", n) for name, n in summary["payloads"].items()),
        )
    )
    title = f"Evidence for {control.qualified_id}: {control.title}"
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; font-size: 0.9rem; }}
code {{ font-size: 0.85rem; word-break: break-all; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>{e(framework.name)} ({e(framework.edition)}), {e(control.group)}.</p>
<p>Period: {e(period["since"])} (inclusive) to {e(period["until"])} (exclusive).
Exported {e(format_time(generated))} from the audit log <code>{e(origin)}</code>,
which then held {log_size} leaves.</p>
<h2>Summary</h2>
<table>{summary_rows}</table>
<h2>Records</h2>
<table>
<tr><th>Leaf</th><th>Time</th><th>Decision / event</th><th>Tenant / actor</th><th>Request</th>
<th>Outcome</th><th>Controls</th><th>Payload</th></tr>
{"".join(rows)}
</table>
{more}
<h2>How to verify</h2>
<p>Every record has an inclusion proof in <code>proofs/</code> against the signed checkpoint
in <code>{CHECKPOINT_FILE}</code>. Check the whole archive offline with
<code>nexus-policy evidence verify ARCHIVE --key KEY</code>, where KEY is the log's public key,
obtained independently of this archive. It should equal <code>{e(verifier)}</code>.</p>
</body>
</html>
"""
    return document.encode()


# --- offline verification --------------------------------------------------------


def verify(archive: Path | bytes, public_key: str | Verifier) -> VerifiedEvidence:
    """Check an evidence archive with nothing but the archive and the log's public key.

    Raises `EvidenceError` naming the file (and record) at the first problem.
    """
    verifier = public_key if isinstance(public_key, Verifier) else _parse_key(public_key)
    name = archive.name if isinstance(archive, Path) else "archive"
    files = _read_archive(archive if isinstance(archive, bytes) else archive.read_bytes(), name)
    _check_manifest(files)
    if files[LOG_KEY_FILE].decode(errors="replace").strip() != str(verifier):
        raise EvidenceError(
            LOG_KEY_FILE, f"the archive's key is not the key you trust ({verifier.name})"
        )
    note = files[CHECKPOINT_FILE].decode(errors="replace")
    try:
        checkpoint = Checkpoint.open(note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise EvidenceError(CHECKPOINT_FILE, f"does not verify: {exc}") from None
    export_index, export = _check_export_event(files, verifier, note)
    for content_name in CONTENT_FILES:
        recorded = export["files"].get(content_name) if isinstance(export["files"], dict) else None
        if recorded != _sha256(files[content_name]):
            raise EvidenceError(
                content_name,
                f"differs from the SHA-256 the log recorded at export (leaf {export_index})",
            )
    controls = _json(files, CONTROLS_FILE)
    qualified = f"{export['framework']}:{export['control']}"
    scope = (controls.get("control") or {}).get("qualified_id"), controls.get("period")
    if scope != (qualified, {"since": export["since"], "until": export["until"]}):
        raise EvidenceError(CONTROLS_FILE, "its control or period differs from the export event")
    counts, proofs_used = _check_records(files, verifier, note, qualified, export)
    if counts.records != export.get("records"):
        raise EvidenceError(
            RECORDS_FILE,
            f"holds {counts.records} records; the export event recorded {export.get('records')}",
        )
    if controls.get("summary") != counts.as_dict():
        raise EvidenceError(CONTROLS_FILE, "its summary counts differ from the records")
    proofs_used.add(_proof_name(export_index))
    stray = sorted(n for n in files if n.startswith(PROOFS_DIR) and n not in proofs_used)
    if stray:
        raise EvidenceError(stray[0], "no record in the archive uses this proof")
    _json(files, OSCAL_FILE)
    return VerifiedEvidence(
        framework=str(export["framework"]),
        control=str(export["control"]),
        since=str(export["since"]),
        until=str(export["until"]),
        records=counts.records,
        checkpoint=checkpoint,
        export_event_index=export_index,
    )


def _parse_key(text: str) -> Verifier:
    try:
        return Verifier.parse(text.strip())
    except MalformedKeyError as exc:
        raise EvidenceError("key", f"not a log verifier key: {exc}") from None


def _read_archive(data: bytes, name: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    raise EvidenceError(name, f"member {member.name!r} is not a regular file")
                if (
                    member.name.startswith("/")
                    or ".." in member.name.split("/")
                    or member.size > _MAX_MEMBER_BYTES
                ):
                    raise EvidenceError(name, f"member {member.name!r} is not allowed")
                if member.name in files:
                    raise EvidenceError(member.name, "appears twice in the archive")
                handle = tar.extractfile(member)
                files[member.name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise EvidenceError(name, f"not a readable .tar.gz archive: {exc}") from None
    for required in (
        MANIFEST_FILE,
        CHECKPOINT_FILE,
        LOG_KEY_FILE,
        EXPORT_EVENT_FILE,
        *CONTENT_FILES,
    ):
        if required not in files:
            raise EvidenceError(required, "is missing from the archive")
    return files


def _check_manifest(files: Mapping[str, bytes]) -> None:
    manifest = _json(files, MANIFEST_FILE)
    listed = manifest.get("files")
    if manifest.get("format") != ARCHIVE_FORMAT or not isinstance(listed, dict):
        raise EvidenceError(MANIFEST_FILE, f"is not a {ARCHIVE_FORMAT} manifest")
    for name, data in files.items():
        if name == MANIFEST_FILE:
            continue
        if name not in listed:
            raise EvidenceError(name, f"is not listed in {MANIFEST_FILE}")
        actual = _sha256(data)
        if listed[name] != actual:
            raise EvidenceError(
                name, f"its SHA-256 is {actual} but {MANIFEST_FILE} lists {listed[name]}"
            )
    for name in listed:
        if name not in files:
            raise EvidenceError(name, f"is listed in {MANIFEST_FILE} but missing from the archive")


def _check_export_event(
    files: Mapping[str, bytes], verifier: Verifier, note: str
) -> tuple[int, dict[str, Any]]:
    document = _json(files, EXPORT_EVENT_FILE)
    index, text = document.get("index"), document.get("entry")
    if not isinstance(index, int) or not isinstance(text, str):
        raise EvidenceError(EXPORT_EVENT_FILE, "needs an integer index and the entry text")
    label = f"export event (leaf {index})"
    _check_proof(files, verifier, note, index, text.encode(), label)
    entry = _entry(EXPORT_EVENT_FILE, text, label)
    payload = entry.get("payload")
    if (
        entry.get("kind") != "event"
        or entry.get("type") != EXPORT_EVENT
        or not isinstance(payload, dict)
        or payload.get("format") != ARCHIVE_FORMAT
        or not all(key in payload for key in ("framework", "control", "since", "until", "files"))
    ):
        raise EvidenceError(EXPORT_EVENT_FILE, f"leaf {index} is not an {EXPORT_EVENT} event")
    return index, payload


def _check_records(
    files: Mapping[str, bytes],
    verifier: Verifier,
    note: str,
    qualified: str,
    export: Mapping[str, Any],
) -> tuple[_Counts, set[str]]:
    counts = _Counts()
    used: set[str] = set()
    previous = -1
    for number, line in enumerate(files[RECORDS_FILE].splitlines(), start=1):
        where = f"line {number}"
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise EvidenceError(RECORDS_FILE, "is not JSON", record=where) from None
        index, text = record.get("index"), record.get("entry")
        if not isinstance(index, int) or not isinstance(text, str):
            raise EvidenceError(RECORDS_FILE, "needs an integer index and entry", record=where)
        entry = _entry(RECORDS_FILE, text, where)
        kind = "decision" if entry.get("decision_id") else "event"
        record_id = entry.get("decision_id") or entry.get("event_id")
        label = f"{where} (leaf {index}, {kind} {record_id})"
        if index <= previous:
            raise EvidenceError(
                RECORDS_FILE, "records are not in ascending leaf order", record=label
            )
        previous = index
        if record.get("leaf_hash") != hashlib.sha256(b"\x00" + text.encode()).hexdigest():
            raise EvidenceError(RECORDS_FILE, "its leaf_hash is not the entry's", record=label)
        used.add(_check_proof(files, verifier, note, index, text.encode(), label))
        if qualified not in entry.get("controls", []):
            raise EvidenceError(RECORDS_FILE, f"the entry does not name {qualified}", record=label)
        moment = entry.get("time")
        if not isinstance(moment, str) or not export["since"] <= moment < export["until"]:
            raise EvidenceError(RECORDS_FILE, "the entry is outside the period", record=label)
        _check_payload(record, entry, label)
        status = record["payload_status"]
        counts.records += 1
        counts.payloads[status] += 1
        if entry.get("kind") == "event":
            counts.events += 1
        elif (entry.get("outcome") or {}).get("allowed"):
            counts.allowed += 1
        else:
            counts.denied += 1
    return counts, used


def _check_payload(record: Mapping[str, Any], entry: Mapping[str, Any], label: str) -> None:
    status, payload, salt = record.get("payload_status"), record.get("payload"), record.get("salt")
    if status == _INLINE:
        if "payload" not in entry or payload is not None:
            raise EvidenceError(
                RECORDS_FILE, "payload status 'inline' but the entry has no payload", record=label
            )
        return
    if status not in {str(s) for s in PayloadStatus}:
        raise EvidenceError(RECORDS_FILE, f"unknown payload status {status!r}", record=label)
    if status != PayloadStatus.PRESENT:
        if payload is not None or salt is not None:
            raise EvidenceError(
                RECORDS_FILE, f"payload {status} yet a payload is given", record=label
            )
        return
    if not isinstance(payload, str) or not isinstance(salt, str):
        raise EvidenceError(
            RECORDS_FILE, "payload present but payload or salt missing", record=label
        )
    try:
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        raise EvidenceError(RECORDS_FILE, "the salt is not hex", record=label) from None
    if commitment(salt_bytes, payload.encode()) != entry.get("payload_commitment"):
        raise EvidenceError(
            RECORDS_FILE, "the payload does not match the entry's payload_commitment", record=label
        )


def _check_proof(
    files: Mapping[str, bytes], verifier: Verifier, note: str, index: int, leaf: bytes, label: str
) -> str:
    name = _proof_name(index)
    data = files.get(name)
    if data is None:
        raise EvidenceError(name, "is missing from the archive", record=label)
    try:
        proof = TlogProof.parse(data)
    except ProofError as exc:
        raise EvidenceError(name, f"is not a tlog-proof: {exc}", record=label) from None
    if proof.index != index:
        raise EvidenceError(name, f"proves leaf {proof.index}, not {index}", record=label)
    if proof.checkpoint != note:
        raise EvidenceError(
            name, f"is against another checkpoint than {CHECKPOINT_FILE}", record=label
        )
    try:
        proof.verify(verifier, leaf=leaf)
    except (NoteError, CheckpointError, MerkleError) as exc:
        raise EvidenceError(
            name, f"the record's entry is not proven in the signed tree: {exc}", record=label
        ) from None
    return name


def _entry(file: str, text: str, label: str) -> dict[str, Any]:
    try:
        entry = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise EvidenceError(file, "the entry is not JSON", record=label) from None
    if not isinstance(entry, dict):
        raise EvidenceError(file, "the entry is not a JSON object", record=label)
    return entry


def _json(files: Mapping[str, bytes], name: str) -> dict[str, Any]:
    try:
        document = orjson.loads(files[name])
    except orjson.JSONDecodeError:
        raise EvidenceError(name, "is not valid JSON") from None
    if not isinstance(document, dict):
        raise EvidenceError(name, "is not a JSON object")
    return document
