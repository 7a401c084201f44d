"""Backpressure on the usage intake: a bound on usage reports being processed at once.

A report is admitted before its body is read; past the threshold it is refused
at once with `UsageBusyError` (429 with ``Retry-After``), so a burst of gateway
reports waits at the gateway instead of piling up threads and database
sessions here. A refused report was never accepted (nothing of it is counted);
every admitted one is processed to its answer, so nothing accepted is lost.
"""

from __future__ import annotations

from nexus_runtime.inflight import BusyError, InFlightGate

__all__ = [
    "DEFAULT_MAX_USAGE_IN_FLIGHT",
    "DEFAULT_USAGE_RETRY_AFTER_S",
    "UsageBusyError",
    "UsageGate",
]

DEFAULT_MAX_USAGE_IN_FLIGHT = 64
DEFAULT_USAGE_RETRY_AFTER_S = 1


class UsageBusyError(BusyError):
    """The usage intake is at its threshold; the gateway should retry after a while."""


class UsageGate(InFlightGate):
    """Usage reports being processed at once, and the ones refused."""

    busy = UsageBusyError
    what = "usage reports"

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_USAGE_IN_FLIGHT,
        retry_after_s: int = DEFAULT_USAGE_RETRY_AFTER_S,
    ) -> None:
        super().__init__(max_in_flight, retry_after_s=retry_after_s)

    @property
    def max_in_flight(self) -> int:
        return self.total
