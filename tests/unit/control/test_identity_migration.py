"""Migration 0008 on a database with history: principals, authors and enforcers carried over.

Tokens of one (folded) name become one principal, rollouts learn their
author's principal (so separation of duties holds across the upgrade), and
every enforcer already known and not removed is registered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import text

from nexus_control.store.database import control_database
from nexus_control.store.tables import ApiToken, EnforcerRegistration, Rollout
from nexus_control.store.tables import Principal as PrincipalRow

NOW = datetime(2026, 12, 1, tzinfo=UTC).isoformat()


def test_upgrade_gives_history_principals_and_registrations(tmp_path: Path) -> None:
    db = control_database(f"sqlite:///{tmp_path / 'cp.db'}")
    config = db.alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        for token_id, name, role in (
            ("t1", "alice", "author"),
            ("t2", "Alice", "approver"),
            ("t3", "bob", "approver"),
        ):
            connection.execute(
                text(
                    "INSERT INTO api_tokens (id, name, role, token_sha256, created_at) "
                    "VALUES (:id, :name, :role, :sha, :at)"
                ),
                {"id": token_id, "name": name, "role": role, "sha": token_id * 20, "at": NOW},
            )
        connection.execute(
            text(
                "INSERT INTO bundle_revisions (revision, bundle, sha256, size, manifest, config,"
                " author, published_at) VALUES ('r1', 'nexus', 'x', 0, '{}', '{}', 'alice', :at)"
            ),
            {"at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO rollouts (bundle, revision, state, wave, needs_approval, diff, "
                "created_by, created_at, updated_at) VALUES ('nexus', 'r1', 'pending_approval',"
                " 0, 1, '{}', 'alice', :at, :at)"
            ),
            {"at": NOW},
        )
        for enforcer_id, removed in (("eu-1", None), ("gone-1", NOW)):
            connection.execute(
                text(
                    "INSERT INTO enforcers (id, region, first_seen_at, last_seen_at, removed_at)"
                    " VALUES (:id, 'eu-west-1', :at, :at, :removed)"
                ),
                {"id": enforcer_id, "at": NOW, "removed": removed},
            )
    db.migrate()
    with db.session() as session:
        tokens = {t.id: t.principal_id for t in session.query(ApiToken)}
        assert tokens["t1"] == tokens["t2"] != tokens["t3"]
        assert session.query(PrincipalRow).count() == 2
        assert [r.id for r in session.query(EnforcerRegistration)] == ["eu-1"]
        (rollout,) = session.query(Rollout)
        assert rollout.created_by_principal == tokens["t1"], "the author is known by principal"
    db.dispose()
