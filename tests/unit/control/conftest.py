"""Fixtures shared by the control plane's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_control.store.database import control_database
from nexus_runtime.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated control-plane database on a fresh SQLite file."""
    database = control_database(f"sqlite:///{tmp_path / 'cp.db'}")
    database.migrate()
    yield database
    database.dispose()
