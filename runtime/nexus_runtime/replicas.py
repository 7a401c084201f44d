"""One process per SQLite database: a second `nexus-policy serve` on it is refused.

SQLite is the embedded, single-process default. Two control planes on one
SQLite file would each run the rollout engine and the audit log's sequencer,
and nothing in SQLite would stop them promoting twice or forking the log; with
PostgreSQL, leases decide which replica runs them. So a serving process holds
an exclusive `flock` on ``<database>.serve.lock`` beside the file for its whole
life; the kernel drops the lock when the process dies (even by ``kill -9``), so
a crashed process never blocks its successor.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from nexus_contract.errors import NexusError

__all__ = ["SingleProcessError", "SqliteServeLock", "sqlite_path"]

LOCK_SUFFIX = ".serve.lock"


class SingleProcessError(NexusError):
    """Another process already serves from this SQLite database."""


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path.startswith(":memory:"):
        return None
    return Path(path)


class SqliteServeLock:
    """Held while a process serves from the SQLite databases of ``urls`` (others ignored)."""

    def __init__(self, urls: list[str]) -> None:
        self._paths = sorted({p.resolve() for u in urls if (p := sqlite_path(u)) is not None})
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Lock every database file; raise `SingleProcessError` if another process holds one."""
        try:
            for path in self._paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = path.with_name(path.name + LOCK_SUFFIX)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise SingleProcessError(
                        f"another nexus-policy serve already uses the SQLite database {path} "
                        f"(it holds {lock}); SQLite supports one serving process only: stop "
                        "it, or run several replicas on PostgreSQL (NEXUS_DATABASE_URL="
                        "postgresql+psycopg://...)"
                    ) from None
                self._fds.append(fd)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> SqliteServeLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
