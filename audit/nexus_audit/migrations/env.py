"""Alembic environment for the audit log's schema.

Only the audit tables are compared and migrated, so the audit schema can share
a database with the control plane's (each keeps its own version table).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from nexus_audit.db import VERSION_TABLE
from nexus_audit.tables import Base

config = context.config
target_metadata = Base.metadata
version_table = config.get_main_option("version_table") or VERSION_TABLE


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    if type_ == "table":
        return name in target_metadata.tables
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table=version_table,
        include_name=_include_name,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        version_table=version_table,
        include_name=_include_name,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
