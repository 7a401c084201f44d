"""The audit log's database: its own schema, migrations and version table, and compaction.

The audit schema has its own Alembic environment and version table
(``alembic_version_audit``), so it can live in the control plane's database
or in one of its own. The sequencer reads then writes in one transaction, so
SQLite connections begin explicitly (see `nexus_runtime.database.make_engine`).

Erasure must leave no copy of a destroyed key: SQLite connections run with
``secure_delete`` (freed cells and pages are zeroed), and `compact` rewrites
what a deletion left behind: on SQLite a ``wal_checkpoint(TRUNCATE)``, a
``VACUUM`` and another checkpoint; on PostgreSQL ``VACUUM FULL`` of the
tables (new files; the old ones are unlinked), a ``CHECKPOINT`` and a WAL
switch, so the segments holding the old rows age out (run PostgreSQL with
``wal_recycle = off`` so they are unlinked rather than reused in place).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event

from nexus_contract.errors import NexusError
from nexus_runtime.database import Database

__all__ = ["MIGRATIONS", "VERSION_TABLE", "AuditDatabase", "CompactionError"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_audit"
_CHECKPOINT_TRIES = 50
_CHECKPOINT_WAIT_S = 0.1


class CompactionError(NexusError):
    """The database could not be compacted after an erasure (it is retried on the next one)."""


class AuditDatabase(Database):
    """The audit schema's database at ``url`` (call `migrate` before use)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            url, migrations=MIGRATIONS, version_table=VERSION_TABLE, explicit_begin=True
        )
        if self.engine.dialect.name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA secure_delete=ON")
                cursor.close()

    @property
    def sqlite_path(self) -> Path | None:
        url = str(self.engine.url)
        if not url.startswith("sqlite:///"):
            return None
        return Path(url.removeprefix("sqlite:///"))

    def compact(self, tables: Sequence[str]) -> None:
        """Rewrite ``tables`` (and the WAL) so deleted rows leave no bytes behind."""
        if self.engine.dialect.name == "sqlite":
            raw = self.engine.raw_connection()
            try:
                connection = raw.driver_connection
                assert connection is not None
                self._sqlite_checkpoint(connection)
                connection.execute("VACUUM")
                self._sqlite_checkpoint(connection)
            finally:
                raw.close()
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in tables:
                conn.exec_driver_sql(f'VACUUM (FULL) "{table}"')
            conn.exec_driver_sql("CHECKPOINT")
            conn.exec_driver_sql("SELECT pg_switch_wal()")
            conn.exec_driver_sql("CHECKPOINT")

    @staticmethod
    def _sqlite_checkpoint(connection: Any) -> None:
        for _ in range(_CHECKPOINT_TRIES):
            busy, _frames, _done = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(_CHECKPOINT_WAIT_S)
        raise CompactionError(
            "the SQLite WAL could not be truncated: a reader kept it open; erased rows are "
            "gone from the tables but their old pages may linger in the WAL until the next "
            "checkpoint"
        )
