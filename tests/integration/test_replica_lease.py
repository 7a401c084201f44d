"""The rollout engine's lease on a real PostgreSQL: one holder at a time, and a takeover when
the holder is killed with SIGKILL (its session ends with its socket)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from nexus_control.store.lease import AdvisoryLease, run_while_leader
from nexus_runtime.lease import hold_while_leader

pytestmark = pytest.mark.postgres

HOLDER = """
import sys, time
from nexus_control.store.lease import AdvisoryLease
lease = AdvisoryLease(sys.argv[1], "test-lease")
while not lease.try_acquire():
    time.sleep(0.1)
print("held", flush=True)
time.sleep(3600)
"""
TAKEOVER_TIMEOUT_S = 60.0


def test_one_holder_at_a_time_and_takeover_after_kill_9(pg_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        other = AdvisoryLease(pg_url, "test-lease")
        assert not other.try_acquire(), "a second replica never holds a held lease"
        unrelated = AdvisoryLease(pg_url, "another-lease")
        assert unrelated.try_acquire(), "leases of other names are independent"
        unrelated.release()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while not other.try_acquire():
            assert time.monotonic() < deadline, "the lease was never freed after kill -9"
            time.sleep(0.2)
        assert other.still_held()
        other.release()
    finally:
        holder.kill()
        holder.wait()


def test_the_loop_runs_only_while_the_lease_is_held(pg_url: str) -> None:
    """Two replicas' loops: one body runs; when its session is cut, the other's takes over."""

    async def scenario() -> list[str]:
        runs: list[str] = []
        leases = [AdvisoryLease(pg_url, "test-loop"), AdvisoryLease(pg_url, "test-loop")]
        stop = asyncio.Event()

        def body_of(name: str) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
            async def body(inner: asyncio.Event) -> None:
                runs.append(f"start {name}")
                await inner.wait()
                runs.append(f"stop {name}")

            return body

        loops = [
            asyncio.create_task(run_while_leader(lease, stop, body_of(f"r{i}")))
            for i, lease in enumerate(leases)
        ]
        while len(runs) < 1:
            await asyncio.sleep(0.05)
        first = runs[0].split()[1]
        holder = leases[int(first[1])]
        # The holder's session is terminated from outside (as when PostgreSQL or the network
        # drops it): the holder stops its body, the other replica starts its own.
        assert holder._conn is not None
        pid = holder._conn.info.backend_pid
        admin = AdvisoryLease(pg_url, "admin")
        assert admin.try_acquire() and admin._conn is not None
        admin._conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.release()
        while not any(r.startswith("start") and first not in r for r in runs):
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*loops)
        return runs

    runs = asyncio.run(scenario())
    starts = [r for r in runs if r.startswith("start")]
    first = starts[0].split()[1]
    # The cut-off holder stopped its loop; the other replica's loop took over. (The old
    # holder's step in flight may overlap the first step of the new: steps are idempotent.)
    assert f"stop {first}" in runs, runs
    assert len({s.split()[1] for s in starts}) == 2, runs


def test_the_threaded_runner_hands_the_lease_over_when_the_holders_session_is_cut(
    pg_url: str,
) -> None:
    """The audit signer's runner (threads, not asyncio): one body at a time, and a takeover."""
    runs: list[str] = []
    started = threading.Event()
    leases = [AdvisoryLease(pg_url, "test-threads"), AdvisoryLease(pg_url, "test-threads")]
    stop = threading.Event()

    def body_of(name: str) -> Callable[[threading.Event], None]:
        def body(inner: threading.Event) -> None:
            runs.append(f"start {name}")
            started.set()
            inner.wait()
            runs.append(f"stop {name}")

        return body

    loops = [
        threading.Thread(target=hold_while_leader, args=(lease, stop, body_of(f"r{i}")))
        for i, lease in enumerate(leases)
    ]
    for loop in loops:
        loop.start()
    try:
        assert started.wait(TAKEOVER_TIMEOUT_S)
        first = runs[0].split()[1]
        holder = leases[int(first[1])]
        assert holder._conn is not None
        pid = holder._conn.info.backend_pid
        admin = AdvisoryLease(pg_url, "admin")
        assert admin.try_acquire() and admin._conn is not None
        admin._conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.release()
        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while not any(r.startswith("start") and first not in r for r in runs):
            assert time.monotonic() < deadline, runs
            time.sleep(0.05)
    finally:
        stop.set()
        for loop in loops:
            loop.join(timeout=30)
    starts = [r for r in runs if r.startswith("start")]
    assert f"stop {first}" in runs, runs
    assert len({s.split()[1] for s in starts}) == 2, runs
