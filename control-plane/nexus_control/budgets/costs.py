"""The cost API's reads: exact spend over a UTC time range, by tenant, model, feature, route.

A query names a half-open range ``[from, to)`` on its granularity's boundaries
(hours, or UTC midnights), and what to group by; the answer is the sum of the
cells (`nexus_control.budgets.cells`) in micro-dollars, so it reconciles to the
last micro-dollar with the usage reports counted and with the month's total
the budget uses. A query is refused (`CostQueryError`) rather than answered in
part: a range past its granularity's retention, or one that would read more
than `MAX_CELL_READS` tenant-buckets, must be narrowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from nexus_contract.errors import NexusError
from nexus_control.budgets.cells import (
    Cell,
    Granularity,
    bucket_start,
    buckets_between,
)
from nexus_control.budgets.spend import SpendStore

__all__ = [
    "GROUP_KEYS",
    "MAX_CELL_READS",
    "CostQuery",
    "CostQueryError",
    "CostReport",
    "CostRow",
    "SpendScopeError",
    "cost_report",
    "parse_query",
]

GROUP_KEYS = ("tenant", "model", "feature", "route")
"""What spend may be grouped by, in the order a row's group lists them."""
MAX_CELL_READS = 50_000
"""Buckets times tenants one query may read: bounds the work and the answer."""


class CostQueryError(NexusError):
    """A spend query that cannot be answered as asked: its range, granularity or grouping."""


class SpendScopeError(NexusError):
    """A tenant-scoped reader asking for the spend of a tenant its token does not name."""


@dataclass(frozen=True)
class CostQuery:
    start: datetime
    end: datetime
    granularity: Granularity
    group_by: tuple[str, ...]


@dataclass(frozen=True)
class CostRow:
    bucket: str
    start: datetime
    group: tuple[tuple[str, str | None], ...]
    """(key, value) per group key, in `GROUP_KEYS` order; None: the report named none."""
    micros: int


@dataclass(frozen=True)
class CostReport:
    query: CostQuery
    tenants: tuple[str, ...]
    """The tenants read (named, in scope, or every one with spend in the range)."""
    rows: tuple[CostRow, ...]
    total_micros: int


def _granularity(value: str) -> Granularity:
    try:
        return Granularity(value)
    except ValueError:
        names = ", ".join(g.value for g in Granularity)
        raise CostQueryError(
            f"unknown granularity {value[:20]!r}: expected one of {names}"
        ) from None


def _group_by(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    asked = [key.strip() for key in value.split(",")]
    for key in asked:
        if key not in GROUP_KEYS:
            raise CostQueryError(
                f"unknown group_by key {key[:20]!r}: expected some of {', '.join(GROUP_KEYS)}"
            )
    return tuple(key for key in GROUP_KEYS if key in asked)


def _moment(name: str, value: str, granularity: Granularity) -> datetime:
    """``value`` (a date, or an RFC 3339 time with its zone) on a ``granularity`` boundary."""
    try:
        moment = (
            datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            if len(value) == len("YYYY-MM-DD")
            else datetime.fromisoformat(value)
        )
    except ValueError:
        raise CostQueryError(
            f"{name} {value[:40]!r} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise CostQueryError(f"{name} {value!r} needs a time zone (RFC 3339, e.g. ...Z)")
    moment = moment.astimezone(UTC)
    on_hour = moment.minute == moment.second == moment.microsecond == 0
    if not on_hour or (granularity is Granularity.DAY and moment.hour != 0):
        boundary = "an hour" if granularity is Granularity.HOUR else "a UTC midnight"
        raise CostQueryError(f"{name} {value!r} is not on {boundary} ({granularity} buckets)")
    return moment


def parse_query(
    start: str, end: str, granularity: str = "day", group_by: str | None = None
) -> CostQuery:
    """The query ``from``/``to``/``granularity``/``group_by`` ask for; CostQueryError saying
    what is wrong otherwise."""
    grain = _granularity(granularity)
    keys = _group_by(group_by)
    begin, finish = _moment("from", start, grain), _moment("to", end, grain)
    if begin > finish:
        raise CostQueryError(f"from {start!r} is after to {end!r}")
    if finish - begin > grain.kept:
        raise CostQueryError(
            f"the range spans {_span(finish - begin)}: {grain} buckets are kept "
            f"{grain.kept.days} days, so a range of them spans at most that"
        )
    return CostQuery(begin, finish, grain, keys)


def _span(length: timedelta) -> str:
    days, rest = divmod(length, timedelta(days=1))
    return f"{days} days" + (f" {rest // timedelta(hours=1)} hours" if rest else "")


def _days_of(query: CostQuery) -> list[str]:
    if query.start == query.end:
        return []
    first = query.start.replace(hour=0)
    return buckets_between(Granularity.DAY, first, query.end)


def cost_report(
    store: SpendStore,
    query: CostQuery,
    *,
    tenant: str | None,
    scope: frozenset[str] | None,
) -> CostReport:
    """Spend of ``tenant`` (or of every tenant in ``scope``; None: of every tenant) over
    ``query``'s range; SpendScopeError when ``tenant`` is outside ``scope``."""
    if tenant is not None and scope is not None and tenant not in scope:
        raise SpendScopeError(f"this token may not read the spend of tenant {tenant!r}")
    buckets = buckets_between(query.granularity, query.start, query.end)
    if tenant is not None:
        tenants = [tenant]
    elif scope is not None:
        tenants = sorted(scope)
    else:
        tenants = sorted(store.tenants_on(_days_of(query)))
    if len(buckets) * len(tenants) > MAX_CELL_READS:
        raise CostQueryError(
            f"{len(buckets)} buckets of {len(tenants)} tenants is more than {MAX_CELL_READS} "
            "to read: narrow the range, or name a tenant"
        )
    rows = _rows(query, store.cells(query.granularity, buckets, tenants))
    return CostReport(query, tuple(tenants), rows, sum(row.micros for row in rows))


def _value(cell: Cell, key: str) -> str | None:
    if key == "tenant":
        return cell.tenant
    combo = cell.combo
    return {"model": combo.model, "feature": combo.feature, "route": combo.route}[key]


def _rows(query: CostQuery, cells: Iterable[Cell]) -> tuple[CostRow, ...]:
    sums: dict[tuple[str, tuple[tuple[str, str | None], ...]], int] = {}
    for cell in cells:
        group = tuple((key, _value(cell, key)) for key in query.group_by)
        sums[cell.bucket, group] = sums.get((cell.bucket, group), 0) + cell.micros
    return tuple(
        CostRow(bucket, bucket_start(query.granularity, bucket), group, micros)
        for (bucket, group), micros in sorted(sums.items(), key=_order)
        if micros
    )


def _order(item: tuple[tuple[str, tuple[tuple[str, str | None], ...]], int]) -> tuple[str, str]:
    (bucket, group), _ = item
    return bucket, "\x00".join(value or "" for _, value in group)
