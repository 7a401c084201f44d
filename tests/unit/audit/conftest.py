"""Fixtures of the audit service's unit tests: logs on SQLite with fixed keys and a clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_audit.catalog import Catalogs, load_catalogs
from nexus_audit.service import AuditLog
from tests.unit.audit.harness import Clock, open_log

LogFactory = Callable[..., AuditLog]


@pytest.fixture(scope="session")
def catalogs() -> Catalogs:
    return load_catalogs()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_log(tmp_path: Path, catalogs: Catalogs, clock: Clock) -> Iterator[LogFactory]:
    """Open audit logs on SQLite files under tmp_path (or at a URL); closed after the test."""
    opened: list[AuditLog] = []
    counter = iter(range(1000))

    def factory(url: str | None = None, **options: float) -> AuditLog:
        url = url or f"sqlite:///{tmp_path}/audit-{next(counter)}.db"
        log = open_log(url, catalogs, clock, **options)  # type: ignore[arg-type]
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


@pytest.fixture
def audit_log(make_log: LogFactory) -> AuditLog:
    return make_log()
