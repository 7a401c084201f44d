"""Several replicas on one PostgreSQL: lease takeover after ``kill -9``, and cross-replica
long-poll wake-ups.

Takeover: a replica process holds the rollout engine's lease (the advisory lock of
`nexus_control.store.lease`); another contends for it exactly as `run_while_leader` does (an
attempt every `RETRY_S`); the holder is killed with SIGKILL and the clock runs until the
contender holds the lease. Target p99 < 10 s.

Signer takeover: a replica process runs the audit log on PostgreSQL and holds the checkpoint
signer's lease (`nexus_audit.service.SIGNER_LEASE`); a second audit log (this process) stands
by with decisions appended through it; the holder is killed with SIGKILL and the clock runs
until the standby has taken the chain over and a checkpoint covering every leaf is stored.
Same target as the rollout lease's takeover.

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
import uuid
from datetime import UTC, datetime
from pathlib import Path

from nexus_audit import storage
from nexus_audit.catalog import load_catalogs
from nexus_control.serving.notifier import RevisionNotifier, bundle_key
from nexus_control.serving.pg_notify import PostgresRelay
from nexus_control.serving.protocol import RECHECK_S
from nexus_control.store.lease import RETRY_S, AdvisoryLease
from tests.bench.common import Context, Figure, figure, median, percentile, report
from tests.fixtures.servers import PostgresServer
from tests.unit.audit.harness import open_log
from tests.unit.audit.opa_events import events, gzip_batch

NAME = "replicas"
TITLE = "Replicas on one PostgreSQL: lease takeover after kill -9, cross-replica wake-up"
TAKEOVER_TARGET_S = 10.0
WAKEUP_TARGET_S = 1.0
TAKEOVER_ROUNDS = 20
SIGNER_ROUNDS = 5
REPO = Path(__file__).resolve().parents[2]
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

SIGNER_HOLDER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from nexus_audit.catalog import load_catalogs
from tests.unit.audit.harness import open_log
log = open_log(sys.argv[1], load_catalogs(), lambda: datetime.now(UTC), journal=Path(sys.argv[2]),
               every_s=0.2)
log.start()
while not log.checkpoint_signer.signing:
    time.sleep(0.02)
print("held", flush=True)
time.sleep(3600)
"""


def _signer_takeover(server: PostgresServer, workdir: Path, n: int) -> float:
    name = f"signer_{n}_{uuid.uuid4().hex[:8]}"
    server.psql(f"CREATE DATABASE {name}")
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    holder = subprocess.Popen(
        [sys.executable, "-c", SIGNER_HOLDER, url, str(workdir / f"{name}-a.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    standby = None
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError("the holder never took the signer lease")
        standby = open_log(
            url,
            load_catalogs(),
            lambda: datetime.now(UTC),
            journal=workdir / f"{name}-b.jsonl",
            every_s=0.2,
        )
        standby.start()
        standby.ingest_upload(gzip_batch(events(20, start=datetime.now(UTC))), "gzip")
        if standby.checkpoint_signer.signing:
            raise RuntimeError("two signers")
        time.sleep(RETRY_S * (n % 10) / 10)
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        while True:
            with standby.db.session() as session:
                latest = storage.latest_checkpoint(session)
                covered = latest is not None and latest.size == storage.tree_size(session)
            if standby.checkpoint_signer.signing and covered:
                return time.monotonic() - killed
            if time.monotonic() - killed > GIVE_UP_S:
                raise RuntimeError(f"no signer takeover after {GIVE_UP_S} s")
            time.sleep(0.01)
    finally:
        if standby is not None:
            standby.close()
        holder.kill()
        holder.wait()


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
        signers = [
            _signer_takeover(server, ctx.workdir, n)
            for n in range(2 if ctx.quick else SIGNER_ROUNDS)
        ]
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
        figure(NAME, "signer takeover after kill -9, median", median(signers), "s"),
        figure(
            NAME,
            f"signer takeover after kill -9, max of {len(signers)}",
            max(signers),
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
