"""Admission of decision-log uploads: a cap per enforcer and in total.

An upload is admitted before its body is read; past either cap it is refused
at once with `UploadsBusyError` (429 with ``Retry-After``, which OPA's
decision-log plugin honours by backing off and retrying the same chunk), so a
burst of uploads can never hold more than ``total`` bodies in memory.
"""

from __future__ import annotations

from nexus_runtime.inflight import BusyError, InFlightGate

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


class UploadsBusyError(BusyError):
    """Too many uploads in flight (for this enforcer, or in total); retry after a while."""


class UploadGate(InFlightGate):
    """Uploads in flight, in total and per enforcer (admission happens on the event loop)."""

    busy = UploadsBusyError
    what = "uploads"
    key_name = "enforcer"

    def __init__(
        self,
        total: int = DEFAULT_MAX_UPLOADS,
        per_enforcer: int = DEFAULT_MAX_UPLOADS_PER_ENFORCER,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        super().__init__(total, per_key=per_enforcer, retry_after_s=retry_after_s)
        self.per_enforcer = per_enforcer
