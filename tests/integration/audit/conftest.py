"""Fixtures of the audit integration tests: logs on the session's real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nexus_audit.catalog import Catalogs, load_catalogs
from nexus_audit.service import AuditLog
from tests.fixtures.servers import PostgresServer
from tests.unit.audit.harness import open_log

LogFactory = Callable[..., AuditLog]


@pytest.fixture(scope="session")
def catalogs() -> Catalogs:
    return load_catalogs()


@pytest.fixture
def make_pg_log(pg_url: str, catalogs: Catalogs, tmp_path: Path) -> Iterator[LogFactory]:
    """Open audit logs on the test's fresh PostgreSQL database; closed after the test."""
    opened: list[AuditLog] = []

    def factory(**options: Any) -> AuditLog:
        options.setdefault("journal", tmp_path / "checkpoints.jsonl")
        log = open_log(pg_url, catalogs, lambda: datetime.now(UTC), **options)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


def psql(postgres: PostgresServer, database_url: str, sql: str) -> str:
    """Run ``sql`` with the psql client against the database of ``database_url``."""
    return postgres.psql(sql, database=database_url.rsplit("/", 1)[1])


@pytest.fixture
def audit_log(tmp_path: Path, catalogs: Catalogs) -> Iterator[AuditLog]:
    """An audit log on a SQLite file (for tests whose real peers are the witnesses, Go …)."""
    log = open_log(f"sqlite:///{tmp_path}/audit.db", catalogs, lambda: datetime.now(UTC))
    yield log
    log.close()
