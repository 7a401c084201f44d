"""Fixtures of the insider-attack tests, each run on SQLite and on a real PostgreSQL.

``stack`` is the whole stack an insider attacks: the control plane (SQLite or
PostgreSQL) and a real enforcer, one per storage per module, the example
bundle published from sources and approved. ``audit`` is an audit log on the
parametrised database (its checkpoint journal outside it), and ``api`` serves
the audit routes on a real loopback server (uvicorn) with the test
principals of `tests.unit.audit.audit_app`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_audit.catalog import Catalogs, load_catalogs
from nexus_audit.service import AuditLog
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_dataplane.process import free_port
from nexus_runtime.server import ServerThread
from tests.fixtures.environment import Environment, credentials_overlay
from tests.fixtures.servers import PostgresServer
from tests.unit.audit.audit_app import bearer, create_app
from tests.unit.audit.harness import open_log


def _database(request: pytest.FixtureRequest, name: str, workdir: object) -> str:
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        database = f"sec_{uuid.uuid4().hex[:10]}"
        postgres.psql(f"CREATE DATABASE {database}")
        return postgres.url.rsplit("/", 1)[0] + f"/{database}"
    return f"sqlite:///{workdir}/{name}.db"


@contextmanager
def running_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    *,
    name: str,
    enforcers: int = 1,
) -> Iterator[Environment]:
    """The control plane on ``request.param`` storage and ``enforcers`` real enforcers."""
    workdir = tmp_path_factory.mktemp(f"{name}-{request.param}")
    env = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=_database(request, "cp", workdir),
        plain=credentials_overlay(workdir / "credentials"),
        enforcers=enforcers,
    )
    try:
        env.start()
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
) -> Iterator[Environment]:
    """A running stack on ``request.param`` storage, with the example bundle in force."""
    with running_stack(request, tmp_path_factory, opa, session_keys, name="security") as env:
        yield env


DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def catalogs() -> Catalogs:
    return load_catalogs()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/audit.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


AuditFactory = Callable[..., AuditLog]


@pytest.fixture
def open_audit(database_url: str, tmp_path: Path, catalogs: Catalogs) -> Iterator[AuditFactory]:
    opened: list[AuditLog] = []

    def factory(**options: Any) -> AuditLog:
        options.setdefault("journal", tmp_path / "outside-the-database" / "checkpoints.jsonl")
        log = open_log(database_url, catalogs, lambda: datetime.now(UTC), **options)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


@pytest.fixture
def audit(open_audit: AuditFactory) -> AuditLog:
    return open_audit()


@dataclass
class Api:
    url: str
    log: AuditLog

    def post(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {**bearer(token), **kwargs.pop("headers", {})}
        return httpx.post(self.url + path, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=bearer(token), timeout=60, **kwargs)

    def upload(self, body: bytes, *, token: str = "enforcer-token", enforcer: str = "eu-west-1-a",
               encoding: str = "gzip") -> httpx.Response:  # fmt: skip
        return self.post(
            "/v1/opa/logs",
            token,
            content=body,
            headers={"content-encoding": encoding, "x-nexus-enforcer": enforcer},
        )


@pytest.fixture
def api(audit: AuditLog) -> Iterator[Api]:
    with ServerThread(create_app(audit), "127.0.0.1", free_port()) as server:
        yield Api(server.url, audit)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, whose files the test may read end to end.

    ``wal_recycle = off``, as the README asks of production: WAL segments the
    server no longer needs are unlinked, not reused with old rows inside.
    """
    server = PostgresServer(settings={"wal_recycle": "off", "wal_keep_size": "0"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
