"""Admission of decision-log uploads: a cap per enforcer and in total.

An upload is admitted before its body is read; past either cap it is refused
at once with `UploadsBusyError` (429 with ``Retry-After``, which OPA's
decision-log plugin honours by backing off and retrying the same chunk), so a
burst of uploads can never hold more than ``total`` bodies in memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

from nexus_contract.errors import NexusError

__all__ = [
    "DEFAULT_MAX_UPLOADS",
    "DEFAULT_MAX_UPLOADS_PER_ENFORCER",
    "DEFAULT_RETRY_AFTER_S",
    "UploadGate",
    "UploadsBusyError",
]

DEFAULT_MAX_UPLOADS = 8
DEFAULT_MAX_UPLOADS_PER_ENFORCER = 2
DEFAULT_RETRY_AFTER_S = 1


class UploadsBusyError(NexusError):
    """Too many uploads in flight (for this enforcer, or in total); retry after a while."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UploadGate:
    """Counts uploads in flight; thread-safe (admission happens on the event loop)."""

    def __init__(
        self,
        total: int = DEFAULT_MAX_UPLOADS,
        per_enforcer: int = DEFAULT_MAX_UPLOADS_PER_ENFORCER,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        if total < 1 or per_enforcer < 1:
            raise ValueError("upload caps must be positive")
        self.total = total
        self.per_enforcer = per_enforcer
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._count = 0

    @property
    def in_flight(self) -> int:
        return self._count

    @contextlib.contextmanager
    def admit(self, enforcer: str) -> Iterator[None]:
        with self._lock:
            if self._count >= self.total:
                raise UploadsBusyError(
                    f"{self._count} uploads are in flight, the most the intake takes at once",
                    self.retry_after_s,
                )
            if self._in_flight[enforcer] >= self.per_enforcer:
                raise UploadsBusyError(
                    f"enforcer {enforcer!r} already has {self._in_flight[enforcer]} uploads "
                    "in flight",
                    self.retry_after_s,
                )
            self._count += 1
            self._in_flight[enforcer] += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                self._in_flight[enforcer] -= 1
                if not self._in_flight[enforcer]:
                    del self._in_flight[enforcer]
