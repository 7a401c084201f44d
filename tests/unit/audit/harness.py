"""An audit log with fixed keys and a settable clock, for the unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from nexus_audit.catalog import Catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import KeyWrapper, LocalKeyWrapper
from nexus_audit.erasure import ErasureResult, approve_erasure, request_erasure
from nexus_audit.facts import PolicyFacts, StaticFacts
from nexus_audit.intake import IntakeLimits, IntakeRules
from nexus_audit.journal import CheckpointJournal
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog
from nexus_audit.witness.client import WitnessPool

ORIGIN = "nexus.local/audit"
LOG_KEY = Signer(ORIGIN, bytes(range(32)))
MASTER_KEY = bytes(range(100, 132))
TENANTS = frozenset({"acme", "hooli", "umbrella", "globex", "stark", "wayne", "initech"})
"""The tenants the harness's policy in force knows (bundles/gateway's, and more)."""
TOOLS = frozenset({"web-search", "calculator", "code-exec", "payment-refund"})
FACTS = StaticFacts(TENANTS, {}, TOOLS)


class Clock:
    """A settable clock for checkpoint timing and event times."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def open_log(
    url: str,
    catalogs: Catalogs,
    clock: Callable[[], datetime],
    *,
    every_leaves: int = 1000,
    every_s: float = 3600.0,
    max_bytes: int = 1 << 20,
    max_events: int = 1000,
    journal: Path | None = None,
    facts: PolicyFacts | None = FACTS,
    rules: IntakeRules | None = None,
    witnesses: WitnessPool | None = None,
    wrapper: KeyWrapper | None = None,
) -> AuditLog:
    """Migrate the database at ``url`` and open the log on it.

    The checkpoint journal defaults to a file beside a SQLite database (else
    ``journal`` is required).
    """
    db = AuditDatabase(url)
    db.migrate()
    if journal is None:
        assert url.startswith("sqlite:///"), "give a journal path for this database"
        journal = Path(url.removeprefix("sqlite:///") + ".checkpoints.jsonl")
    return AuditLog(
        db,
        LOG_KEY,
        wrapper or LocalKeyWrapper(MASTER_KEY),
        catalogs,
        journal=CheckpointJournal(journal),
        checkpoint_every_leaves=every_leaves,
        checkpoint_every_s=every_s,
        limits=IntakeLimits(max_bytes, max_events),
        rules=rules or IntakeRules(max_age=timedelta(days=3650), max_ahead=timedelta(days=3650)),
        facts=facts,
        witnesses=witnesses,
        clock=clock,
    )


def erase(
    log: AuditLog,
    *,
    tenant: str,
    subject: str | None = None,
    actor: str = "dpo",
    reference: str | None = None,
    approver: str = "second-dpo",
) -> ErasureResult:
    """Request an erasure as ``actor`` and approve it as ``approver`` (two people)."""
    request = request_erasure(
        log, tenant=tenant, subject=subject, requested_by=actor, reference=reference
    )
    return approve_erasure(log, request.id, approved_by=approver)
