"""OPA's bundle protocol, as the control plane speaks it: ETags and long polling.

``GET <service>/bundles/<region>/<bundle>``: the ETag is the revision; an
``If-None-Match`` naming the revision to serve gets 304, held for up to the
``wait=N`` of OPA's ``Prefer`` header while nothing changes. A held poll wakes
on a notification, and re-reads the database every `RECHECK_S` in any case, so
a change made by another process is seen too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nexus_control.serving.notifier import bundle_key
from nexus_control.serving.server import BundleServer

__all__ = [
    "ERRORED_HOLD_S",
    "RECHECK_S",
    "PollAnswer",
    "answer_poll",
    "held_revision",
    "long_poll_wait",
]

ERRORED_HOLD_S = 1
RECHECK_S = 1.0

_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d{1,6})(?:$|[;,\s])")


@dataclass(frozen=True)
class PollAnswer:
    """What a poll is answered with: 404 without a revision, 304 without an archive, else 200."""

    revision: str | None
    archive: bytes | None


def held_revision(if_none_match: str | None) -> str | None:
    """The revision the enforcer holds: the first entity tag of If-None-Match."""
    if not if_none_match:
        return None
    first = if_none_match.split(",")[0].strip()
    first = first.removeprefix("W/").strip('"')
    return first or None


def long_poll_wait(prefer: str | None, limit_s: int) -> int:
    """The seconds OPA asks a poll to be held (``Prefer: …wait=N``), at most ``limit_s``."""
    if not prefer:
        return 0
    match = _WAIT.search(prefer)
    return min(int(match.group(1)), limit_s) if match else 0


async def answer_poll(
    server: BundleServer,
    *,
    enforcer: str,
    region: str,
    bundle: str,
    held: str | None,
    wait_s: int,
    disconnected: Callable[[], Awaitable[bool]],
) -> PollAnswer:
    """Hold the poll while the enforcer has what it should (up to ``wait_s``), then answer."""
    errored = await asyncio.to_thread(server.record_poll, enforcer, region, bundle, held)
    served = await asyncio.to_thread(server.served_revision, region, bundle)
    started = time.monotonic()
    deadline = started + wait_s
    while served is not None and served == held and time.monotonic() < deadline:
        if errored:
            # OPA clears an activation error only on the 304 that ends a poll;
            # after a rollback to what it holds, that 304 should come soon, not
            # at the end of a 30 s hold. (A short hold, not none: a stuck error
            # must not spin a poll loop.) The error may be reported while the
            # poll is already held, so it is looked at again on every recheck.
            deadline = min(deadline, started + ERRORED_HOLD_S)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await server.notifier.wait(bundle_key(region, bundle), min(RECHECK_S, remaining))
        if await disconnected():
            return PollAnswer(served, None)
        served, errored = await asyncio.to_thread(server.poll_view, enforcer, region, bundle)
    if wait_s:
        await asyncio.to_thread(server.touch, enforcer, region)
    if served is None or served == held:
        return PollAnswer(served, None)
    return PollAnswer(served, await asyncio.to_thread(server.archive, bundle, served))
