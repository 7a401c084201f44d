"""Spend cells: micro-dollars per (tenant, model, feature, route) in one UTC hour or day.

A cell's bucket is named by its UTC start (``YYYY-MM-DDTHH`` for an hour,
``YYYY-MM-DD`` for a day) and kept for a bounded time after its bucket ends
(`HOURS_KEPT`, `DAYS_KEPT`), so the counters' memory is bounded by the
retention times the number of combinations the policy in force knows. Every
report adds the same micro-dollars to its hour's cell, its day's cell and its
month's total: the hours of a day sum to the day, the days of a month to the month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

__all__ = [
    "DAYS_KEPT",
    "HOURS_KEPT",
    "Cell",
    "Combo",
    "Granularity",
    "bucket_of",
    "bucket_start",
    "buckets_between",
    "combo_field",
    "expires_at",
    "parse_combo_field",
]

HOURS_KEPT = timedelta(days=8)
"""How long an hour's cells are kept after the hour ends."""
DAYS_KEPT = timedelta(days=400)
"""How long a day's cells (and a month's totals) are kept after they end."""

_SEPARATOR = "|"
"""Between a combination's parts: ids and route names never hold it."""


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def span(self) -> timedelta:
        return timedelta(hours=1) if self is Granularity.HOUR else timedelta(days=1)

    @property
    def kept(self) -> timedelta:
        return HOURS_KEPT if self is Granularity.HOUR else DAYS_KEPT


@dataclass(frozen=True)
class Combo:
    """What one cell counts: a model, and the feature and route when the report named them."""

    model: str
    feature: str | None = None
    route: str | None = None


@dataclass(frozen=True)
class Cell:
    tenant: str
    bucket: str
    combo: Combo
    micros: int


def bucket_of(granularity: Granularity, moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H" if granularity is Granularity.HOUR else "%Y-%m-%d")


def bucket_start(granularity: Granularity, bucket: str) -> datetime:
    pattern = "%Y-%m-%dT%H" if granularity is Granularity.HOUR else "%Y-%m-%d"
    return datetime.strptime(bucket, pattern).replace(tzinfo=UTC)


def expires_at(granularity: Granularity, bucket: str) -> datetime:
    """When ``bucket``'s cells may be dropped: its end plus its granularity's retention."""
    return bucket_start(granularity, bucket) + granularity.span + granularity.kept


def buckets_between(granularity: Granularity, start: datetime, end: datetime) -> list[str]:
    """The buckets of ``[start, end)``; ``start`` and ``end`` lie on bucket boundaries."""
    out: list[str] = []
    moment = start
    while moment < end:
        out.append(bucket_of(granularity, moment))
        moment += granularity.span
    return out


def combo_field(combo: Combo) -> str:
    return _SEPARATOR.join((combo.model, combo.feature or "", combo.route or ""))


def parse_combo_field(field: str) -> Combo:
    model, feature, route = field.split(_SEPARATOR)
    return Combo(model, feature or None, route or None)
