"""Database engines and Alembic migrations, for every schema the project keeps.

SQLite (a file under ``.nexus/``) is the embedded default; PostgreSQL is
production and the integration tests. Each schema (the control plane's, the
audit log's) has its own Alembic environment and version table, so they can
share one database or live apart. Schemas are created and upgraded by Alembic
only (`Database.migrate`), never by ``create_all``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "make_engine", "run_migrations"]

SQLITE_BUSY_TIMEOUT_S = 30
POOL_SIZE = 10
POOL_OVERFLOW = 20


def make_engine(url: str, *, explicit_begin: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    With ``explicit_begin`` the SQLite driver's own transaction handling is
    replaced by an explicit ``BEGIN``: pysqlite would otherwise run a
    transaction's first SELECTs outside it, which a read-then-write sequencer
    (the audit log's) cannot allow. Without it, the driver begins at the first
    write, which lets many short writers queue on the busy timeout instead.
    """
    if not url.startswith("sqlite"):
        return create_engine(
            url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )
    _make_sqlite_parent(url)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        if explicit_begin:
            dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if explicit_begin:

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN")

    return engine


def _make_sqlite_parent(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    if path and path != url and not path.startswith(":memory:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


class Database:
    """An engine, its sessions, and the Alembic environment of one schema.

    ``session()`` commits or rolls back as a unit.
    """

    def __init__(
        self, url: str, *, migrations: Path, version_table: str, explicit_begin: bool = False
    ) -> None:
        self.url = url
        self.migrations = migrations
        self.version_table = version_table
        self.engine = make_engine(url, explicit_begin=explicit_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.migrations))
        url = self.engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        config.set_main_option("version_table", self.version_table)
        return config

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = self.alembic_config()
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def run_migrations(metadata: MetaData, version_table: str) -> None:
    """The body of a schema's ``migrations/env.py``: migrate only that schema's tables.

    Only the tables of ``metadata`` are compared, so schemas sharing a
    database never see each other's tables as strays. Call it from env.py
    only: Alembic's ``context`` exists while Alembic runs that script.
    """
    from alembic import context as proxy

    context: EnvironmentContext = proxy  # type: ignore[assignment]
    config = context.config
    table = config.get_main_option("version_table") or version_table

    def include_name(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "table" or name in metadata.tables

    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": table,
        "include_name": include_name,
    }
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as own:
            _online(context, own, options)
        return
    _online(context, connection, options)


def _online(context: EnvironmentContext, connection: Connection, options: dict[str, Any]) -> None:
    context.configure(connection=connection, render_as_batch=True, **options)
    with context.begin_transaction():
        context.run_migrations()
