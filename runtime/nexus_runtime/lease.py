"""One replica at a time runs a singleton loop: a PostgreSQL session advisory lock.

The rollout engine must step on exactly one replica, or two could promote a
wave twice; the audit log's checkpoint signer likewise, or each replica would
sign (and witness) its own checkpoints. The lease is `pg_try_advisory_lock`
on a connection of its own: PostgreSQL releases it when that session ends,
and a holder killed with ``kill -9`` ends its session as the kernel closes its
socket, so another replica takes over at its next attempt (`RETRY_S`). TCP
keepalives bound how long a holder cut off by the network keeps it. A holder
checks its session every `CHECK_S` and stops the loop as soon as the session
is gone; a step already running when the session drops may still finish (the
loops' steps are idempotent, and a takeover's first step re-reads everything).

`hold_while_leader` runs a thread's loop under a lease (the audit service is
threaded); the control plane's asyncio runner builds on the same
`AdvisoryLease` (`nexus_control.store.lease`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

__all__ = [
    "CHECK_S",
    "KEEPALIVE_IDLE_S",
    "RETRY_S",
    "AdvisoryLease",
    "hold_while_leader",
    "libpq_url",
]

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How often a replica without the lease tries to take it."""
CHECK_S = 1.0
"""How often the holder checks that its session (and so the lease) is still there."""
KEEPALIVE_IDLE_S = 5
"""TCP keepalives on the lease's connection: a holder cut off by the network is noticed by
PostgreSQL (which then frees the lock) and by the holder within ~11 s (5 + 3 x 2)."""


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq connection string of a ``postgresql+psycopg://`` SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLease:
    """The lease ``name`` on the PostgreSQL database at ``url`` (a SQLAlchemy URL)."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self._conninfo = libpq_url(url)
        self._key = _lock_key(name)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; False if another session does or the DB is down."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=KEEPALIVE_IDLE_S,
                    keepalives_interval=2,
                    keepalives_count=3,
                    connect_timeout=5,
                    # Operators (and tests) see who holds a lease in pg_stat_activity.
                    application_name=f"nexus-lease {self.name} pid {os.getpid()}"[:63],
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except psycopg.Error:
            self._drop()
            return False
        return bool(row and row[0])

    def still_held(self) -> bool:
        """True while the session holding the lease is alive."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            # The lock belongs to this session and is never unlocked while held: the
            # session answering is the lease being held.
            row = self._conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            self._drop()
            return False
        return bool(row and row[0])

    def release(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


def hold_while_leader(
    lease: AdvisoryLease,
    stop: threading.Event,
    body: Callable[[threading.Event], None],
) -> None:
    """Run ``body`` in a thread whenever this process holds ``lease``, until ``stop``.

    ``body`` gets its own stop event, set when ``stop`` is or when the lease is lost;
    the lease is released only once ``body`` has returned.
    """
    while not stop.is_set():
        if not lease.try_acquire():
            stop.wait(RETRY_S)
            continue
        log.info("took the %s lease", lease.name)
        inner = threading.Event()
        worker = threading.Thread(
            target=body, args=(inner,), name=f"{lease.name}-holder", daemon=True
        )
        worker.start()
        try:
            while not stop.is_set() and worker.is_alive():
                stop.wait(CHECK_S)
                if not lease.still_held():
                    log.warning("lost the %s lease; stopping until it is taken again", lease.name)
                    break
        finally:
            inner.set()
            worker.join()
            lease.release()
        if not stop.is_set():
            stop.wait(RETRY_S)  # a body that ended by itself is not restarted in a busy loop
