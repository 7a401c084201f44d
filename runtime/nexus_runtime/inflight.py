"""A bound on work in flight, in total and per key, for the intakes that admit before reading.

An intake asks `InFlightGate.admit` before it reads a body; past either bound
the request is refused at once with the gate's `BusyError` (429 with
``Retry-After``), so a burst waits at the client instead of piling up threads,
bodies and database sessions here. A refused request was never accepted, and
every admitted one runs to its answer, so nothing accepted is lost.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

from nexus_contract.errors import NexusError

__all__ = ["BusyError", "InFlightGate"]


class BusyError(NexusError):
    """The intake is at its bound; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InFlightGate:
    """Counts what is in flight (in total and per key) and what was refused; thread-safe.

    Subclasses name what they count (``what``, ``key_name``) and the error they
    raise (``busy``), so each intake's handler answers its own refusals.
    """

    busy: ClassVar[type[BusyError]] = BusyError
    what: ClassVar[str] = "requests"
    key_name: ClassVar[str] = "client"

    def __init__(self, total: int, *, per_key: int | None = None, retry_after_s: int = 1) -> None:
        if total < 1 or (per_key is not None and per_key < 1) or retry_after_s < 1:
            raise ValueError(
                f"the bounds on {self.what} in flight and retry-after must be positive"
            )
        self.total = total
        self.per_key = per_key
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._by_key: Counter[str] = Counter()
        self._count = 0
        self._refused = 0

    @property
    def in_flight(self) -> int:
        return self._count

    @property
    def refused(self) -> int:
        """Requests refused as busy since the process started (a Prometheus counter)."""
        return self._refused

    @contextlib.contextmanager
    def admit(self, key: str = "") -> Iterator[None]:
        with self._lock:
            if self._count >= self.total:
                self._refused += 1
                raise self.busy(
                    f"{self._count} {self.what} are in flight, the most the intake takes at once",
                    self.retry_after_s,
                )
            if self.per_key is not None and self._by_key[key] >= self.per_key:
                self._refused += 1
                raise self.busy(
                    f"{self.key_name} {key!r} already has {self._by_key[key]} {self.what} "
                    "in flight",
                    self.retry_after_s,
                )
            self._count += 1
            self._by_key[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                self._by_key[key] -= 1
                if not self._by_key[key]:
                    del self._by_key[key]
