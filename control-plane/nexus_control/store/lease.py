"""One replica at a time runs the rollout engine: `nexus_runtime.lease` under asyncio.

The rollout engine must step on exactly one replica, or two could promote a
wave twice. `run_while_leader` runs it whenever this process holds an
`AdvisoryLease` (a PostgreSQL session advisory lock; see `nexus_runtime.lease`
for how a ``kill -9``-ed holder's lease is freed and taken over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nexus_runtime.lease import CHECK_S, KEEPALIVE_IDLE_S, RETRY_S, AdvisoryLease

__all__ = ["CHECK_S", "KEEPALIVE_IDLE_S", "RETRY_S", "AdvisoryLease", "run_while_leader"]

log = logging.getLogger(__name__)


async def run_while_leader(
    lease: AdvisoryLease,
    stop: asyncio.Event,
    body: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> None:
    """Run ``body`` whenever this process holds ``lease``, until ``stop``.

    ``body`` gets its own stop event, set when ``stop`` is or when the lease is lost.
    """
    while not stop.is_set():
        if not await asyncio.to_thread(lease.try_acquire):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)
            continue
        log.info("took the %s lease", lease.name)
        inner = asyncio.Event()
        task = asyncio.create_task(body(inner))
        try:
            while not stop.is_set() and not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_S)
                if not await asyncio.to_thread(lease.still_held):
                    log.warning("lost the %s lease; stopping until it is taken again", lease.name)
                    break
        finally:
            inner.set()
            await task
            await asyncio.to_thread(lease.release)
