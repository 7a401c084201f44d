"""Alembic environment for the control plane's schema."""

from nexus_control.store.database import VERSION_TABLE
from nexus_control.store.tables import Base
from nexus_runtime.database import run_migrations

run_migrations(Base.metadata, VERSION_TABLE)
