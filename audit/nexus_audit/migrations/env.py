"""Alembic environment for the audit log's schema."""

from nexus_audit.database import VERSION_TABLE
from nexus_audit.tables import Base
from nexus_runtime.database import run_migrations

run_migrations(Base.metadata, VERSION_TABLE)
