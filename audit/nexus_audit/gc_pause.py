"""Pausing Python's cyclic garbage collector around allocation-heavy batch work.

Parsing and storing an upload, or verifying the log page by page, allocates
tens of thousands of containers per batch. That keeps triggering full
collections, each of which walks the whole heap: measured, parsing and
validating an upload is 4-5x slower with the collector running. The data
involved (JSON trees, row tuples) holds no reference cycles, so reference
counting frees it at once either way.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["cyclic_gc_paused"]

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_paused_by_us = False


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block; cycles made meanwhile wait for its next run.

    Nested and concurrent users share one pause, which ends with the last of
    them; a collector the host had disabled stays disabled.
    """
    global _gc_pausers, _gc_paused_by_us
    with _gc_lock:
        if _gc_pausers == 0 and gc.isenabled():
            gc.disable()
            _gc_paused_by_us = True
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_paused_by_us:
                gc.enable()
                _gc_paused_by_us = False
