"""An audit log with fixed keys and a settable clock, for the unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from nexus_audit.catalog import Catalogs
from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import LocalKeyWrapper
from nexus_audit.intake import IntakeLimits
from nexus_audit.note import Signer
from nexus_audit.service import AuditLog

ORIGIN = "nexus.local/audit"
LOG_KEY = Signer(ORIGIN, bytes(range(32)))
MASTER_KEY = bytes(range(100, 132))


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
) -> AuditLog:
    """Migrate the database at ``url`` and open the log on it."""
    db = AuditDatabase(url)
    db.migrate()
    return AuditLog(
        db,
        LOG_KEY,
        LocalKeyWrapper(MASTER_KEY),
        catalogs,
        checkpoint_every_leaves=every_leaves,
        checkpoint_every_s=every_s,
        limits=IntakeLimits(max_bytes, max_events),
        clock=clock,
    )
