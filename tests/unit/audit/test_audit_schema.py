"""The audit schema: its own Alembic history, in step with the tables the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from nexus_audit.database import VERSION_TABLE, AuditDatabase
from nexus_audit.tables import Base


def test_the_migrations_create_exactly_the_declared_tables(tmp_path: Path) -> None:
    db = AuditDatabase(f"sqlite:///{tmp_path}/audit.db")
    db.migrate()
    db.migrate()  # idempotent
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == "audit_0004"
        tables = set(inspect(connection).get_table_names())
    db.dispose()
    assert tables == {*Base.metadata.tables, VERSION_TABLE}


def test_the_sequencer_row_exists_after_migrating(tmp_path: Path) -> None:
    db = AuditDatabase(f"sqlite:///{tmp_path}/audit.db")
    db.migrate()
    with db.engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT id, size, keys_epoch FROM log_state").all()
    db.dispose()
    assert row == [(1, 0, 0)]
