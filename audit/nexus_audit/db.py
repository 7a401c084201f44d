"""The audit log's database engine and migrations.

SQLite (a file under ``.nexus/``) is the embedded default; PostgreSQL is
production and the integration tests. The audit schema has its own Alembic
environment and version table (``alembic_version_audit``), so it can live in
the control plane's database or in one of its own. The schema is created and
upgraded by Alembic only (`AuditDatabase.migrate`), never by ``create_all``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MIGRATIONS", "VERSION_TABLE", "AuditDatabase", "alembic_config", "make_engine"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_audit"


def make_engine(url: str) -> Engine:
    """An engine for ``url``.

    SQLite gets WAL, foreign keys and a busy timeout, and the driver's own
    transaction handling is replaced by an explicit ``BEGIN``: pysqlite would
    otherwise run a transaction's first SELECTs outside it, and the
    sequencer's read-then-write must be one transaction.
    """
    if url.startswith("sqlite"):
        _make_sqlite_parent(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _make_sqlite_parent(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    if path and path != url and not path.startswith(":memory:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


class AuditDatabase:
    """The engine and a session factory; ``session()`` commits or rolls back as a unit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        """Bring the audit schema to the newest revision (idempotent)."""
        config = alembic_config(self.engine.url.render_as_string(hide_password=False))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
