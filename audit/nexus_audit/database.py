"""The audit log's database: its own schema, migrations and version table.

The audit schema has its own Alembic environment and version table
(``alembic_version_audit``), so it can live in the control plane's database
or in one of its own. The sequencer reads then writes in one transaction, so
SQLite connections begin explicitly (see `nexus_runtime.database.make_engine`).
"""

from __future__ import annotations

from pathlib import Path

from nexus_runtime.database import Database

__all__ = ["MIGRATIONS", "VERSION_TABLE", "AuditDatabase"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_audit"


class AuditDatabase(Database):
    """The audit schema's database at ``url`` (call `migrate` before use)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            url, migrations=MIGRATIONS, version_table=VERSION_TABLE, explicit_begin=True
        )
