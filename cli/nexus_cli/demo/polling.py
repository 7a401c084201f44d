"""Waiting, in the demo, for something the stack does on its own time."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["until"]


def until(check: Callable[[], bool], deadline_s: float) -> float | None:
    """Seconds until ``check`` is true, polling quickly; None if it never was."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None
