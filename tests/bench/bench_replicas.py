"""Several replicas on one PostgreSQL: lease takeover after ``kill -9``, and cross-replica
long-poll wake-ups.

Takeover: a replica process holds the rollout engine's lease (the advisory lock of
`nexus_control.store.lease`); another contends for it exactly as `run_while_leader` does (an
attempt every `RETRY_S`); the holder is killed with SIGKILL and the clock runs until the
contender holds the lease. Target p99 < 10 s.

Wake-up: two replicas' notifiers, each with its `PostgresRelay`; a poll is held on replica B
(for far longer than the 1 s recheck) and replica A notifies the change; the clock runs from
the notify to B's poll waking. Side by side, in the same run, the same wait without a relay,
where only the recheck would find the change: that side is the 1 s floor the relay removes.
Target p99 < 1 s. Both measure the primitives the `serve` processes use, on a real server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from nexus_control.serving.notifier import RevisionNotifier, bundle_key
from nexus_control.serving.pg_notify import PostgresRelay
from nexus_control.serving.protocol import RECHECK_S
from nexus_control.store.lease import RETRY_S, AdvisoryLease
from tests.bench.common import Context, Figure, figure, median, percentile, report
from tests.fixtures.servers import PostgresServer

NAME = "replicas"
TITLE = "Replicas on one PostgreSQL: lease takeover after kill -9, cross-replica wake-up"
TAKEOVER_TARGET_S = 10.0
WAKEUP_TARGET_S = 1.0
TAKEOVER_ROUNDS = 20
WAKEUP_ROUNDS = 200
GIVE_UP_S = 60.0
HOLDER = """
import sys, time
from nexus_control.store.lease import AdvisoryLease
lease = AdvisoryLease(sys.argv[1], sys.argv[2])
while not lease.try_acquire():
    time.sleep(0.05)
print("held", flush=True)
time.sleep(3600)
"""


def _takeover(url: str, n: int) -> float:
    name = f"bench-lease-{n}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, name], stdout=subprocess.PIPE, text=True
    )
    contender = AdvisoryLease(url, name)
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError("the holder never took the lease")
        if contender.try_acquire():
            raise RuntimeError("two holders of one lease")
        # The contender's attempts keep their cadence, with the kill at a random phase of it.
        next_try = time.monotonic() + RETRY_S
        time.sleep(RETRY_S * (n % 10) / 10)
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        while True:
            time.sleep(max(0.0, next_try - time.monotonic()))
            next_try += RETRY_S
            if contender.try_acquire():
                return time.monotonic() - killed
            if time.monotonic() - killed > GIVE_UP_S:
                raise RuntimeError(f"no takeover after {GIVE_UP_S} s")
    finally:
        contender.release()
        holder.kill()
        holder.wait()


async def _wakeups(url: str, rounds: int, relayed: bool) -> list[float]:
    loop = asyncio.get_running_loop()
    a, b = RevisionNotifier(), RevisionNotifier()
    relays = [PostgresRelay(url, n.notify_local) for n in (a, b)] if relayed else []
    for notifier in (a, b):
        notifier.bind(loop)
    for notifier, relay in zip((a, b), relays, strict=False):
        notifier.relay = relay.send
        relay.start()
    try:
        for relay in relays:
            if not await asyncio.to_thread(relay.wait_listening, 30.0):
                raise RuntimeError("the relay never listened")
        windows = []
        for n in range(rounds):
            key = bundle_key(f"region-{n}", "nexus")
            changed = asyncio.Event()

            async def held_poll(key: str = key, changed: asyncio.Event = changed) -> float:
                # As answer_poll: wait for a notification, re-read at least every RECHECK_S.
                while True:
                    await b.wait(key, RECHECK_S)
                    if changed.is_set():
                        return time.perf_counter()

            poll = asyncio.create_task(held_poll())
            await asyncio.sleep(0.01 + (n % 10) * RECHECK_S / 10)
            start = time.perf_counter()
            changed.set()  # the change is in the database from here on
            a.notify([key])
            windows.append(await poll - start)
        return windows
    finally:
        for relay in relays:
            await asyncio.to_thread(relay.stop)


def run(ctx: Context) -> list[Figure]:
    server = PostgresServer()
    server.start()
    try:
        takeovers = [_takeover(server.url, n) for n in range(5 if ctx.quick else TAKEOVER_ROUNDS)]
        rounds = 20 if ctx.quick else WAKEUP_ROUNDS
        relayed = asyncio.run(_wakeups(server.url, rounds, relayed=True))
        recheck = asyncio.run(_wakeups(server.url, max(10, rounds // 10), relayed=False))
    finally:
        server.stop()
    figures = [
        figure(NAME, "takeover after kill -9, median", median(takeovers), "s"),
        figure(
            NAME,
            f"takeover after kill -9, p99 of {len(takeovers)}",
            percentile(takeovers, 99),
            "s",
            target=("<", TAKEOVER_TARGET_S),
        ),
        figure(NAME, "cross-replica wake-up (LISTEN/NOTIFY), median", median(relayed), "s"),
        figure(
            NAME,
            f"cross-replica wake-up (LISTEN/NOTIFY), p99 of {len(relayed)}",
            percentile(relayed, 99),
            "s",
            target=("<", WAKEUP_TARGET_S),
        ),
        figure(NAME, "same wait without the relay (recheck only), median", median(recheck), "s"),
        figure(
            NAME,
            "recheck-only median ÷ relayed median",
            median(recheck) / median(relayed) if median(relayed) else None,
            "x",
        ),
    ]
    report(ctx.console, TITLE, figures)
    return figures
