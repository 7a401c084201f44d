"""Verifying an evidence archive offline, with nothing but the archive and the log's key.

When the checkpoint was witnessed, the archive carries the C2SP tlog-policy it
was cosigned under (``witness-policy.txt``, whose SHA-256 the export event
recorded in the log) and the checkpoint carries the cosignatures: the quorum
is enforced offline. An auditor who keeps the witnesses' keys themselves
passes their own policy (``--policy``), which then replaces the archive's.

Every failure raises `EvidenceError` naming the file (and the record) at
fault; a verified archive returns what it proves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.entry import commitment
from nexus_audit.evidence.format import (
    ARCHIVE_FORMAT,
    CHECKPOINT_FILE,
    CONTENT_FILES,
    CONTROLS_FILE,
    EXPORT_EVENT,
    EXPORT_EVENT_FILE,
    INLINE_STATUS,
    LOG_KEY_FILE,
    MANIFEST_FILE,
    OSCAL_FILE,
    POLICY_FILE,
    PROOFS_DIR,
    RECORDS_FILE,
    EvidenceError,
    RecordCounts,
    proof_name,
    read_archive,
    sha256_hex,
)
from nexus_audit.merkle import MerkleError
from nexus_audit.note import MalformedKeyError, NoteError, Verifier
from nexus_audit.payloads import PayloadStatus
from nexus_audit.policy import PolicyError, QuorumNotMetError, TlogPolicy
from nexus_audit.proof import ProofError, TlogProof

__all__ = ["VerifiedEvidence", "verify_archive"]


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
    cosigners: tuple[str, ...] = ()
    """Witnesses (policy names) whose cosignature on the checkpoint verified."""
    quorum: str | None = None
    """The quorum enforced, described; None when the archive has no policy and none was given."""
    tenant: str | None = None


def verify_archive(
    archive: Path | bytes,
    public_key: str | Verifier,
    *,
    policy: TlogPolicy | None = None,
    require_quorum: bool = False,
) -> VerifiedEvidence:
    """Check an evidence archive with nothing but the archive and the log's public key.

    ``policy`` (the auditor's own) overrides the archive's ``witness-policy.txt``;
    with ``require_quorum`` an archive with neither is refused. Raises
    `EvidenceError` naming the file (and record) at the first problem.
    """
    verifier = public_key if isinstance(public_key, Verifier) else _parse_key(public_key)
    name = archive.name if isinstance(archive, Path) else "archive"
    files = read_archive(archive if isinstance(archive, bytes) else archive.read_bytes(), name)
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
    content_names = [*CONTENT_FILES, *((POLICY_FILE,) if POLICY_FILE in files else ())]
    cosigners, quorum = _check_quorum(files, verifier, note, policy, require_quorum)
    recorded_files = export["files"] if isinstance(export["files"], dict) else {}
    if POLICY_FILE in recorded_files and POLICY_FILE not in files:
        raise EvidenceError(POLICY_FILE, "the export recorded a witness policy; it is missing")
    for content_name in content_names:
        recorded = export["files"].get(content_name) if isinstance(export["files"], dict) else None
        if recorded != sha256_hex(files[content_name]):
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
    proofs_used.add(proof_name(export_index))
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
        cosigners=cosigners,
        quorum=quorum,
        tenant=None if export.get("tenant") in (None, "*") else str(export.get("tenant")),
    )


def _check_quorum(
    files: Mapping[str, bytes],
    verifier: Verifier,
    note: str,
    policy: TlogPolicy | None,
    require_quorum: bool,
) -> tuple[tuple[str, ...], str | None]:
    if policy is None and POLICY_FILE in files:
        try:
            policy = TlogPolicy.parse(files[POLICY_FILE], source=POLICY_FILE)
        except PolicyError as exc:
            raise EvidenceError(POLICY_FILE, str(exc)) from None
    if policy is None:
        if require_quorum:
            raise EvidenceError(
                CHECKPOINT_FILE, "no witness policy: the checkpoint's quorum cannot be checked"
            )
        return (), None
    if not any(log_key == verifier for log_key, _ in policy.logs):
        raise EvidenceError(POLICY_FILE, "the policy does not list the log key you trust")
    try:
        _, names = policy.verify(note)
    except (PolicyError, QuorumNotMetError, NoteError, CheckpointError) as exc:
        raise EvidenceError(CHECKPOINT_FILE, f"witness quorum not met: {exc}") from None
    return tuple(sorted(names)), policy.describe_quorum()


def _parse_key(text: str) -> Verifier:
    try:
        return Verifier.parse(text.strip())
    except MalformedKeyError as exc:
        raise EvidenceError("key", f"not a log verifier key: {exc}") from None


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
        actual = sha256_hex(data)
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
) -> tuple[RecordCounts, set[str]]:
    counts = RecordCounts()
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
    if status == INLINE_STATUS:
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
    name = proof_name(index)
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
