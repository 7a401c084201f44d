"""Long-poll wake-ups across replicas through a real PostgreSQL's LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio

import pytest

from nexus_control.serving.notifier import RevisionNotifier, bundle_key
from nexus_control.serving.pg_notify import PostgresRelay

pytestmark = pytest.mark.postgres

LISTEN_TIMEOUT_S = 30.0
HOLD_S = 60.0
"""Far longer than the 1 s recheck: a True from wait() means the notification arrived."""


def test_a_change_on_one_replica_wakes_polls_held_on_another(pg_url: str) -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        replicas = [RevisionNotifier(), RevisionNotifier()]
        relays = [PostgresRelay(pg_url, n.notify_local) for n in replicas]
        for notifier, relay in zip(replicas, relays, strict=True):
            notifier.bind(loop)
            notifier.relay = relay.send
            relay.start()
        try:
            for relay in relays:
                assert await asyncio.to_thread(relay.wait_listening, LISTEN_TIMEOUT_S)
            held = bundle_key("eu-west-1", "nexus")
            other = bundle_key("us-east-1", "nexus")
            woken = asyncio.create_task(replicas[1].wait(held, HOLD_S))
            untouched = asyncio.create_task(replicas[1].wait(other, 3.0))
            await asyncio.sleep(0)  # both waits are registered before the change
            replicas[0].notify([held])
            return await woken, await untouched
        finally:
            for relay in relays:
                await asyncio.to_thread(relay.stop)

    woken, untouched = asyncio.run(scenario())
    assert woken, "the poll held on the other replica was woken by the notification"
    assert not untouched, "a poll on another key was not woken"
