"""Attack 5: one poison outbox event stopping the trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from nexus_audit.service import AuditLog
from nexus_control.store import outbox
from nexus_control.store.database import control_database
from nexus_runtime.database import Database


@pytest.fixture
def control_db(database_url: str, tmp_path: Path, is_postgres: bool) -> Iterator[Database]:
    """The control plane's own schema: beside the audit schema on PostgreSQL, its file on SQLite."""
    url = database_url if is_postgres else f"sqlite:///{tmp_path}/control.db"
    db = control_database(url)
    db.migrate()
    yield db
    db.dispose()


def test_a_poison_outbox_event_is_dead_lettered_and_the_drain_goes_on(
    control_db: Database, audit: AuditLog, is_postgres: bool
) -> None:
    # PostgreSQL's column refuses a 250-character actor outright; SQLite stores it.
    long_actor = "x" * (190 if is_postgres else 250)
    with control_db.session() as session:
        outbox.record(session, "bundle.published", "alice", bundle="gateway", revision="r1")
        outbox.record(session, "Tokens Created!", long_actor, token_id="t-1")
        outbox.record(session, "bundle.published", "bob", bundle="gateway", revision="r2")
    assert outbox.drain(control_db, audit) == 3
    assert outbox.drain(control_db, audit) == 0, "nothing is left to retry forever"

    types = [orjson.loads(audit.leaf(index=i).entry)["type"] for i in range(audit.size())]
    assert types == ["outbox.dead_lettered", "bundle.published", "bundle.published"]
    dead = orjson.loads(audit.leaf(index=0).entry)
    assert dead["payload"]["event_type"] == "Tokens Created!"
    assert dead["payload"]["error"].startswith("type:")
    assert long_actor not in audit.leaf(index=0).entry.decode()
    assert audit.dead_letters() == 1
    assert audit.metrics.get("dead_letters", "Tokens Created!") == 1
