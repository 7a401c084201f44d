"""Money as integer micro-dollars: what counters add, so totals reconcile to the last unit.

A float sum depends on the order it was added in; an integer sum does not. Costs
arrive in USD (a JSON number) and are converted once, at the intake, by their
decimal spelling; readers that want USD convert back at the edge.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["MICROS_PER_USD", "to_micros", "to_usd", "usd_string"]

MICROS_PER_USD = 1_000_000


def to_micros(usd: float) -> int:
    """``usd`` in micro-dollars, rounded half to even from its shortest decimal spelling."""
    exact = Decimal(repr(float(usd))) * MICROS_PER_USD
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def to_usd(micros: int) -> float:
    return micros / MICROS_PER_USD


def usd_string(micros: int) -> str:
    """``micros`` as an exact decimal USD string with six places (``"12.000340"``)."""
    sign = "-" if micros < 0 else ""
    whole, part = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{part:06d}"
