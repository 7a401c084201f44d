"""Carries revision notifications between replicas through PostgreSQL LISTEN/NOTIFY.

A replica that changes what a region should hold notifies its own held polls
at once (`RevisionNotifier`) and, through this relay, every other replica on
the same database: ``pg_notify`` on `CHANNEL` with the bundle key as payload.
Each replica LISTENs on its own connection and wakes its polls for the keys it
hears. Delivery is a fast path only: a notification lost while a connection
is down is covered by every held poll re-reading the database each
`nexus_control.serving.protocol.RECHECK_S`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

import psycopg

from nexus_runtime.lease import libpq_url

__all__ = ["CHANNEL", "PostgresRelay", "libpq_url"]

log = logging.getLogger(__name__)

CHANNEL = "nexus_revision"
LISTEN_IDLE_S = 1.0
"""How long the listener waits for a notification before checking whether to stop."""
RECONNECT_S = 1.0
"""Wait before reconnecting a lost listening or sending connection."""
MAX_QUEUED = 10_000
"""Keys waiting to be sent; past this, the oldest news is dropped (the recheck covers it)."""
MAX_KEY_BYTES = 1_000
"""A payload far below PostgreSQL's 8000-byte limit: keys are region/bundle names."""


class PostgresRelay:
    """Sends this replica's notifications and delivers every replica's to ``deliver``."""

    def __init__(self, url: str, deliver: Callable[[list[str]], None]) -> None:
        self._conninfo = libpq_url(url)
        self._deliver = deliver
        self._outbox: queue.Queue[str | None] = queue.Queue(MAX_QUEUED)
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, name="pg-notify-listen", daemon=True),
            threading.Thread(target=self._send_loop, name="pg-notify-send", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_listening(self, timeout_s: float) -> bool:
        """True once the listener has issued LISTEN (notifications before that are not heard)."""
        return self._listening.wait(timeout_s)

    def send(self, keys: Iterable[str]) -> None:
        """Queue ``keys`` for every replica; never blocks the caller."""
        for key in keys:
            if len(key.encode()) > MAX_KEY_BYTES:
                continue
            try:
                self._outbox.put_nowait(key)
            except queue.Full:
                log.warning("pg_notify queue full; replicas rely on their recheck")
                return

    def stop(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=LISTEN_IDLE_S * 5)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    while not self._stop.is_set():
                        # Each notification is delivered as it arrives; the generator ends
                        # after LISTEN_IDLE_S without one, so the stop flag is seen.
                        for notification in conn.notifies(timeout=LISTEN_IDLE_S):
                            self._deliver([notification.payload])
            except psycopg.Error:
                self._listening.clear()
                log.warning("LISTEN %s connection lost; reconnecting", CHANNEL)
                self._stop.wait(RECONNECT_S)

    def _send_loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while True:
                key = self._outbox.get()
                if key is None:
                    return
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._conninfo, autocommit=True)
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, key))
                except psycopg.Error:
                    log.warning("pg_notify failed; replicas rely on their recheck")
                    conn = None
                    self._stop.wait(RECONNECT_S)
        finally:
            if conn is not None:
                conn.close()
