"""The one JSON form the project hashes, signs and ships.

What ``orjson`` writes with sorted keys: no whitespace, UTF-8 (non-ASCII not
escaped), integers in decimal, floats in their shortest round-trip form. Bundle
revisions, state bundles and audit log entries are all hashed over these bytes,
so any JSON library that sorts keys by code point and writes compact UTF-8
reproduces them for documents without floats.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["CanonicalJsonError", "canonical_json"]


class CanonicalJsonError(ValueError):
    """A value has no canonical JSON form (an integer beyond 64 bits, a non-string key)."""


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise CanonicalJsonError(str(exc)) from None
