"""Wakes held long polls when the revision a region should hold changes.

Notifications are a fast path only: every held poll also re-reads the
database each `nexus_control.serving.protocol.RECHECK_S`, so a change made by
another process is seen without one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

__all__ = ["RevisionNotifier", "bundle_key"]


def bundle_key(region: str, bundle: str) -> str:
    """The key polls of ``region`` for ``bundle`` wait on (``*`` for every region)."""
    return f"{region}/{bundle}"


class RevisionNotifier:
    """Waiters on the event loop, notified from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.relay: Callable[[list[str]], None] | None = None
        """Also tells other replicas (PostgreSQL LISTEN/NOTIFY); None on one process."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve waiters on ``loop``; events of an earlier loop (a restart) are dropped."""
        self._loop = loop
        self._events = {}

    def _event(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    async def wait(self, key: str, timeout_s: float) -> bool:
        """Return True when ``key`` is notified, False when ``timeout_s`` passes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event(key).wait(), timeout_s)
            return True
        return False

    def notify(self, keys: Iterable[str]) -> None:
        """Wake this process's waiters on ``keys``, and every other replica's through the relay."""
        keys = list(keys)
        self.notify_local(keys)
        if self.relay is not None and keys:
            self.relay(keys)

    def notify_local(self, keys: Iterable[str]) -> None:
        """Wake this process's waiters only (what a relay delivers from other replicas)."""
        if self._loop is None:
            return
        for key in keys:
            self._loop.call_soon_threadsafe(self._fire, key)

    def _fire(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
