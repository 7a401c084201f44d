"""Backpressure on the usage intake: a bound on usage reports being processed at once.

A report is admitted before its body is read; past the threshold it is refused
at once with `UsageBusyError` (429 with ``Retry-After``), so a burst of gateway
reports waits at the gateway instead of piling up threads and database
sessions here. A refused report was never accepted (nothing of it is counted);
every admitted one is processed to its answer, so nothing accepted is lost.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from nexus_contract.errors import NexusError

__all__ = [
    "DEFAULT_MAX_USAGE_IN_FLIGHT",
    "DEFAULT_USAGE_RETRY_AFTER_S",
    "UsageBusyError",
    "UsageGate",
]

DEFAULT_MAX_USAGE_IN_FLIGHT = 64
DEFAULT_USAGE_RETRY_AFTER_S = 1


class UsageBusyError(NexusError):
    """The usage intake is at its threshold; the gateway should retry after a while."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UsageGate:
    """Counts usage reports in flight and the ones refused; thread-safe."""

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_USAGE_IN_FLIGHT,
        retry_after_s: int = DEFAULT_USAGE_RETRY_AFTER_S,
    ) -> None:
        if max_in_flight < 1 or retry_after_s < 1:
            raise ValueError("the usage threshold and retry-after must be positive")
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._refused = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def refused(self) -> int:
        """Reports refused as busy since the process started (a Prometheus counter)."""
        return self._refused

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                self._refused += 1
                raise UsageBusyError(
                    f"{self._in_flight} usage reports are being processed, the most the intake "
                    "takes at once",
                    self.retry_after_s,
                )
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
