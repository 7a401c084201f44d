"""The control plane's database: its schema's migrations and version table."""

from __future__ import annotations

from pathlib import Path

from nexus_runtime.database import Database

__all__ = ["MIGRATIONS", "VERSION_TABLE", "control_database"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_control"


def control_database(url: str) -> Database:
    """The control plane's database at ``url`` (not yet migrated)."""
    return Database(url, migrations=MIGRATIONS, version_table=VERSION_TABLE)
