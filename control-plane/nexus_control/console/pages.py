"""What each console page shows, assembled from the services; no HTTP here.

Periods on the controls pages are whole UTC days, ``[since, until)`` with
``until`` inclusive as typed (a date means through its end), because the
evidence counts per control are kept per day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from nexus_audit.catalog import Control, Framework
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.coverage import framework_of
from nexus_audit.evidence import export_archive
from nexus_audit.evidence.verify import VerifiedEvidence, verify_archive
from nexus_audit.merkle import verify_consistency
from nexus_audit.search import (
    INDEX_EVERY_S,
    DecisionQuery,
    EvidenceCounts,
    InvalidQueryError,
    parse_time,
)
from nexus_audit.service import AuditLog
from nexus_audit.verify import LogReport, verify_log
from nexus_contract.errors import NexusError
from nexus_control.access.tokens import Principal
from nexus_control.store import outbox
from nexus_runtime.database import Database

__all__ = [
    "EXPORT_TTL_S",
    "ControlRow",
    "Exports",
    "FullVerification",
    "FullVerifier",
    "LogHealth",
    "Period",
    "ReplaySummary",
    "StoredExport",
    "Verification",
    "control_rows",
    "index_loop",
    "log_health",
    "period_of",
    "replays_of",
    "resolve_control",
    "verify_offline",
]

log = logging.getLogger("nexus.console")

DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 3660
EXPORT_TTL_S = 3600
"""How long an exported archive waits for its download."""


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime
    """Exclusive: midnight after the last day shown."""

    @property
    def since_text(self) -> str:
        return self.since.strftime("%Y-%m-%d")

    @property
    def until_text(self) -> str:
        """The last day, as the form shows it (inclusive)."""
        return (self.until - timedelta(days=1)).strftime("%Y-%m-%d")


def period_of(since: str | None, until: str | None, *, today: date | None = None) -> Period:
    """The period a form names, in whole days; the last 30 days by default."""
    today = today or datetime.now(UTC).date()
    end = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=DEFAULT_PERIOD_DAYS)
    if since:
        start = _day(parse_time(since, "since"))
    if until:
        end = _day(parse_time(until, "until")) + timedelta(days=1)
    if end <= start:
        raise InvalidQueryError("the period is empty: 'until' must not be before 'since'")
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidQueryError(f"a period is at most {MAX_PERIOD_DAYS} days")
    return Period(start, end)


def _day(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


@dataclass(frozen=True)
class ControlRow:
    control: Control
    counts: EvidenceCounts
    related: tuple[str, ...]
    """The crosswalk: qualified ids of other frameworks' controls related to this one."""

    @property
    def gap(self) -> bool:
        return self.counts.total == 0


def control_rows(audit: AuditLog, framework: Framework, period: Period) -> list[ControlRow]:
    counts = audit.evidence_counts(f"{framework.key}:", period.since, period.until)
    return [
        ControlRow(
            control,
            counts.get(control.qualified_id, EvidenceCounts()),
            tuple(sorted(audit.catalogs.related(control.qualified_id))),
        )
        for control in framework.controls.values()
    ]


def resolve_control(audit: AuditLog, qualified: str) -> tuple[Framework, Control]:
    """The framework and control a qualified id names; `UnknownControlError` if none."""
    control = audit.catalogs.control(qualified)
    return framework_of(audit.catalogs, control.framework), control


async def index_loop(stop: asyncio.Event, audit: AuditLog) -> None:
    """Follow the log with the decision search index until ``stop`` (one batch at a time)."""
    while not stop.is_set():
        try:
            read = await asyncio.to_thread(audit.index_decisions)
        except Exception:
            log.exception("decision indexing failed; will retry")
            read = 0
        if read:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INDEX_EVERY_S)


# --- evidence exports ----------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """What verifying an archive offline found: the verified facts, or the first problem."""

    verified: VerifiedEvidence | None
    problem: str | None
    witnesses: tuple[str, ...] = ()
    """Names on cosignature lines of the archive's checkpoint (witnesses), when any."""


@dataclass(frozen=True)
class StoredExport:
    id: str
    path: Path
    filename: str
    owner_token_id: str
    created: float
    sha256: str
    size: int
    records: int
    verification: Verification


class Exports:
    """Archives exported from the console, kept (mode 0600) until downloaded or expired."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._items: dict[str, StoredExport] = {}

    def export(
        self,
        audit: AuditLog,
        principal: Principal,
        framework: Framework,
        control: Control,
        period: Period,
    ) -> StoredExport:
        """Export as the CLI does (the export is an audit event), then verify the archive."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self._expire()
        export_id = secrets.token_urlsafe(16)
        path = self.directory / f"{export_id}.tar.gz"
        summary = export_archive(
            audit,
            framework=framework.key,
            control=control.id,
            since=period.since,
            until=period.until,
            out=path,
            actor=principal.name,
        )
        path.chmod(0o600)
        stored = StoredExport(
            id=export_id,
            path=path,
            filename=f"evidence-{framework.key.lower()}-{control.id.replace(':', '_')}.tar.gz",
            owner_token_id=principal.token_id,
            created=time.time(),
            sha256=summary.sha256,
            size=path.stat().st_size,
            records=summary.records,
            verification=verify_offline(path, audit),
        )
        with self._lock:
            self._items[export_id] = stored
        return stored

    def take(self, export_id: str, principal: Principal) -> StoredExport | None:
        """The export, if ``principal`` made it and it has not expired."""
        self._expire()
        with self._lock:
            found = self._items.get(export_id)
        if found is None or found.owner_token_id != principal.token_id:
            return None
        return found

    def _expire(self) -> None:
        cutoff = time.time() - EXPORT_TTL_S
        with self._lock:
            old = [item for item in self._items.values() if item.created < cutoff]
            for item in old:
                del self._items[item.id]
        for item in old:
            item.path.unlink(missing_ok=True)


def verify_offline(path: Path, audit: AuditLog) -> Verification:
    """Verify ``path`` as an auditor would: the archive and the log's public key only."""
    try:
        verified = verify_archive(path, str(audit.verifier))
    except NexusError as exc:
        return Verification(None, str(exc))
    return Verification(verified, None, _cosigners(verified.checkpoint, audit))


def _cosigners(checkpoint: Checkpoint, audit: AuditLog) -> tuple[str, ...]:
    """Witness names whose cosignatures the log holds for this checkpoint (none without B's
    witnessing); read defensively so the page works with and without it."""
    signed = audit.checkpoint_signer.at(checkpoint.size)
    note = getattr(signed, "cosigned_note", None) if signed is not None else None
    if not isinstance(note, str):
        return ()
    names = []
    for line in note.splitlines():
        if line.startswith("\u2014 ") and not line.startswith(f"\u2014 {audit.origin} "):
            names.append(line.split(" ", 2)[1])
    return tuple(names)


# --- log health ------------------------------------------------------------------


@dataclass(frozen=True)
class LogHealth:
    size: int
    checkpoint_size: int | None
    checkpoint_at: datetime | None
    checkpoint_age_s: float | None
    checkpoint_verified: str | None
    """Why the latest checkpoint failed to verify, None when it verified (or there is none)."""
    consistency: str | None
    """The consistency check with the previous checkpoint: None when it held."""
    previous_size: int | None
    indexed_size: int
    public_key: str
    witnesses: tuple[str, ...]
    last_full: FullVerification | None


@dataclass(frozen=True)
class FullVerification:
    at: datetime
    seconds: float
    report: LogReport | None
    problem: str | None


@dataclass
class FullVerifier:
    """Runs `nexus_audit.verify.verify_log` off the request path, one run at a time."""

    last: FullVerification | None = None
    running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, audit: AuditLog) -> bool:
        """Start a run in a thread; False when one is already running."""
        with self._lock:
            if self.running:
                return False
            self.running = True
        threading.Thread(
            target=self._run, args=(audit,), daemon=True, name="console-verify"
        ).start()
        return True

    def _run(self, audit: AuditLog) -> None:
        started = time.monotonic()
        at = datetime.now(UTC)
        try:
            report: LogReport | None = verify_log(audit.db, audit.verifier)
            problem = None
        except NexusError as exc:
            report, problem = None, str(exc)
        except Exception as exc:  # a crash is a failed verification, shown as such
            log.exception("log verification crashed")
            report, problem = None, f"verification crashed: {exc}"
        with self._lock:
            self.last = FullVerification(at, time.monotonic() - started, report, problem)
            self.running = False


def log_health(audit: AuditLog, verifier: FullVerifier) -> LogHealth:
    """The tree, its latest checkpoint (signature and consistency re-checked now), witnesses."""
    size = audit.size()
    latest = audit.latest_checkpoint()
    checked: str | None = None
    consistency: str | None = None
    previous_size: int | None = None
    witnesses: tuple[str, ...] = ()
    if latest is not None:
        try:
            Checkpoint.open(latest.note, audit.verifier)
        except NexusError as exc:
            checked = str(exc)
        previous_size = audit.previous_checkpoint_size(latest.size)
        if previous_size is not None and previous_size > 0:
            try:
                proof = audit.consistency_proof(previous_size, latest.size)
                verify_consistency(
                    previous_size, latest.size, proof.hashes, proof.old_root, proof.new_root
                )
            except NexusError as exc:
                consistency = str(exc)
        witnesses = _cosigners(latest.checkpoint, audit)
    now = datetime.now(UTC)
    indexed = audit.search_decisions(DecisionQuery(limit=1)).indexed_size
    return LogHealth(
        size=size,
        checkpoint_size=latest.size if latest else None,
        checkpoint_at=latest.created_at if latest else None,
        checkpoint_age_s=(now - latest.created_at).total_seconds() if latest else None,
        checkpoint_verified=checked,
        consistency=consistency,
        previous_size=previous_size,
        indexed_size=indexed,
        public_key=str(audit.verifier),
        witnesses=witnesses,
        last_full=verifier.last,
    )


@dataclass(frozen=True)
class ReplaySummary:
    """A signed replay report of a revision, as its audit event recorded it."""

    at: datetime
    actor: str
    baseline: str
    since: str
    until: str
    total: int
    counts: dict[str, int]
    digest: str
    kid: str
    passed: bool | None
    """The gates' verdict on this report; None when the fleet declares no gates."""
    gates: tuple[dict[str, object], ...]


def replays_of(db: Database, revision: str) -> list[ReplaySummary]:
    """Every replay report (and its gate verdict) with ``revision`` as the candidate, newest first.

    Read from the outbox, where each report was recorded in the same transaction as its
    signature; the audit log holds the same events as leaves.
    """
    with db.session() as session:
        reports = [
            e
            for e in outbox.events(session, "replay.reported")
            if e.payload.get("candidate") == revision
        ]
        verdicts = {
            e.payload.get("digest"): e.payload
            for e in outbox.events(session, "replay.gate_verdict")
            if e.payload.get("candidate") == revision
        }
    summaries = []
    for event in reversed(reports):
        payload = event.payload
        verdict = verdicts.get(payload.get("digest"))
        summaries.append(
            ReplaySummary(
                at=event.created_at,
                actor=event.actor,
                baseline=str(payload.get("baseline") or "recorded"),
                since=str(payload.get("since", "")),
                until=str(payload.get("until", "")),
                total=int(payload.get("total", 0)),
                counts={str(k): int(v) for k, v in dict(payload.get("counts", {})).items()},
                digest=str(payload.get("digest", "")),
                kid=str(payload.get("kid", "")),
                passed=None if verdict is None else bool(verdict.get("passed")),
                gates=tuple(verdict.get("gates", ())) if verdict is not None else (),
            )
        )
    return summaries
