"""Three `nexus-policy serve` replicas on one real PostgreSQL: exactly one holds the rollout
engine's lease, and when it is killed with `kill -9` another replica takes it over while the
survivors stay ready."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from nexus_control.serving.pg_notify import libpq_url
from nexus_dataplane.process import ManagedProcess, free_port, http_ok
from tests.fixtures.plane_process import READY_TIMEOUT_S, ServeProcess

pytestmark = pytest.mark.postgres

TAKEOVER_TIMEOUT_S = 60.0


def lease_holders(url: str) -> list[int]:
    """The pids (from application_name) of the sessions holding the rollout lease."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND a.application_name LIKE 'nexus-lease nexus-rollout-engine pid %'"
        ).fetchall()
    return sorted(int(str(row[0]).rsplit(" ", 1)[1]) for row in rows)


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_one_lease_holder_among_three_replicas_and_takeover_after_kill_9(
    pg_url: str, tmp_path: Path
) -> None:
    first = ServeProcess(tmp_path / "r0", database_url=pg_url)
    replicas: list[ManagedProcess] = [first]
    for i in (1, 2):
        workdir = tmp_path / f"r{i}"
        workdir.mkdir()
        port = free_port()
        env = {**(first.env or {}), "NEXUS_PORT": str(port)}
        env["NEXUS_AUDIT_DATABASE_URL"] = f"sqlite:///{workdir / 'audit.db'}"
        replica = ManagedProcess(f"serve-{i}", first.argv, workdir, env=env)
        replica.port = port  # type: ignore[attr-defined]
        replicas.append(replica)
    ports = [first.port, replicas[1].port, replicas[2].port]  # type: ignore[attr-defined]
    try:
        for replica, port in zip(replicas, ports, strict=True):
            replica.start()
            replica.wait_ready(
                lambda p=port: http_ok(f"http://127.0.0.1:{p}/readyz"), READY_TIMEOUT_S
            )
        pids = {r.pid for r in replicas}
        wait_for(lambda: len(lease_holders(pg_url)) == 1, TAKEOVER_TIMEOUT_S, "no lease holder")
        (holder,) = lease_holders(pg_url)
        assert holder in pids, "the lease is held by one of the replicas"
        victim = next(r for r in replicas if r.pid == holder)
        victim.signal(signal.SIGKILL)
        wait_for(
            lambda: (h := lease_holders(pg_url)) and h[0] != holder,
            TAKEOVER_TIMEOUT_S,
            "no replica took the lease over after kill -9",
        )
        (successor,) = lease_holders(pg_url)
        assert successor in pids - {holder}
        for replica, port in zip(replicas, ports, strict=True):
            if replica is not victim:
                assert http_ok(f"http://127.0.0.1:{port}/readyz")
    finally:
        for replica in replicas:
            replica.stop()
