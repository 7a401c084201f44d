"""Attacks on "several replicas, one truth": a second process on one SQLite
database, and a replica that cannot reach its database pretending to be ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.settings import ControlSettings
from nexus_control.store.database import control_database
from nexus_dataplane.process import ManagedProcess, free_port, http_ok
from nexus_runtime.replicas import SqliteServeLock

CLI = [sys.executable, "-m", "nexus_cli"]


def test_second_serve_on_one_sqlite_database_is_refused(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NEXUS_KEYS_DIR": str(tmp_path / "keys"),
        "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'cp.db'}",
        "NEXUS_AUDIT_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.db'}",
    }
    init = subprocess.run([*CLI, "keys", "init"], env=env, capture_output=True, check=False)
    assert init.returncode == 0, init.stderr
    port = free_port()
    first = ManagedProcess(
        "serve", [*CLI, "serve"], tmp_path / "first", env={**env, "NEXUS_PORT": str(port)}
    )
    first.start()
    try:
        first.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60)
        second = subprocess.run(
            [*CLI, "serve"],
            env={**env, "NEXUS_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert "another nexus-policy serve already uses the SQLite database" in second.stderr
        assert "PostgreSQL" in second.stderr
        # The refused process changed nothing: the first still serves.
        assert http_ok(f"http://127.0.0.1:{port}/readyz")
    finally:
        first.stop()
    # The lock dies with its holder: a successor may serve from the same files.
    with SqliteServeLock([env["NEXUS_DATABASE_URL"], env["NEXUS_AUDIT_DATABASE_URL"]]):
        pass


def test_replica_that_cannot_reach_its_database_is_not_ready(
    tmp_path: Path, session_keys: KeyPaths, opa: Opa
) -> None:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        keys_dir=tmp_path / "keys",
        signing_key_file=session_keys.signing,
        approval_key_file=session_keys.approval,
    )
    plane = create_control_plane(settings, opa=opa)
    with TestClient(create_app(plane)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}
        # The database goes away (nothing listens on this port any more): not ready, and the
        # answer names the schema, never the URL or its credentials.
        healthy = plane.db
        plane.db = control_database(f"postgresql+psycopg://nexus:s3cret@127.0.0.1:{free_port()}/x")
        try:
            refused = client.get("/readyz")
        finally:
            plane.db.dispose()
            plane.db = healthy
        assert refused.status_code == 503
        assert refused.json()["status"] == "unavailable"
        assert refused.json()["unreachable"] == ["alembic_version_control"]
        assert "s3cret" not in refused.text
        # Liveness is not readiness: the process itself is alive.
        assert client.get("/healthz").status_code == 200
