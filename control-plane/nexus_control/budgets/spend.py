"""Spend counters per tenant and month, and per budget window: Redis in production,
in-process for the demo.

Recording is atomic and idempotent on the gateway's request id: a usage
report delivered twice counts once. Counters are integer micro-dollars
(`nexus_control.budgets.money`), so totals reconcile exactly whatever order
reports arrive in; `SpendTotals` converts to USD at the edge. Counters are keyed
by tenant and period (``YYYY-MM``, UTC), so a new month starts from zero with
nothing to reset. Each report also adds to its day's counters (``YYYY-MM-DD``),
per tenant and for all tenants, by model, feature and endpoint (the console's
spend charts), and to its hour's and day's cells (`nexus_control.budgets.cells`,
the cost API's data). The caps count the tenant's budget window
(`nexus_control.budgets.window`) on counters of their own, keyed by the window's key:
`SpendStore.record` returns those, and `SpendStore.window_totals` reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nexus_control.budgets.cells import (
    DAYS_KEPT,
    Cell,
    Combo,
    Granularity,
    bucket_start,
    combo_field,
    expires_at,
)
from nexus_control.budgets.money import to_micros, to_usd

__all__ = [
    "ALL_TENANTS",
    "REQUEST_ID_TTL_S",
    "WINDOW_KEPT",
    "InProcessSpendStore",
    "SpendStore",
    "SpendTotals",
    "Usage",
    "day_of",
    "make_spend_store",
    "month_end",
    "period_of",
]

REQUEST_ID_TTL_S = 62 * 24 * 3600
"""How long a request id is remembered: as long as the longest budget window."""
WINDOW_KEPT = timedelta(days=35)
"""How long a budget window's counters outlive it: the overview can still show the one
before, and nothing but the open window is ever enforced."""


def month_end(period: str) -> datetime:
    """The first instant (UTC) after the month ``period`` (``YYYY-MM``)."""
    year, month = (int(part) for part in period.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def period_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Usage:
    request_id: str
    tenant: str
    model: str
    feature: str | None
    tokens: int
    cost_usd: float
    period: str
    day: str = ""
    """``YYYY-MM-DD`` (UTC) of the request; empty: the period's first day."""
    endpoint: str | None = None
    """The gateway route's name (``chat.completions``), when the report named one."""
    hour: int = 0
    """The UTC hour (0-23) of ``day`` the request was in."""
    window: str = ""
    """The key of the budget window the spend counts against; empty: ``period``."""
    window_end: datetime | None = None
    """When that window ends (its counters are kept `WINDOW_KEPT` longer); None: the
    period's end."""

    @property
    def window_key(self) -> str:
        return self.window or self.period

    @property
    def window_expiry(self) -> datetime:
        """When the window's counters may be dropped."""
        return (self.window_end or month_end(self.period)) + WINDOW_KEPT

    @property
    def day_or_first(self) -> str:
        return self.day or f"{self.period}-01"

    @property
    def hour_bucket(self) -> str:
        return f"{self.day_or_first}T{self.hour:02d}"

    @property
    def cost_micros(self) -> int:
        return to_micros(self.cost_usd)

    @property
    def combo(self) -> Combo:
        return Combo(self.model, self.feature, self.endpoint)


def _usd(micros: dict[str, int]) -> dict[str, float]:
    return {name: to_usd(amount) for name, amount in micros.items()}


@dataclass
class SpendTotals:
    """Spend in one period or day, overall and by model, feature and endpoint (micro-dollars;
    the USD properties are what the caps and the console read)."""

    total_micros: int = 0
    model_micros: dict[str, int] = field(default_factory=dict)
    feature_micros: dict[str, int] = field(default_factory=dict)
    endpoint_micros: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return to_usd(self.total_micros)

    @property
    def models(self) -> dict[str, float]:
        return _usd(self.model_micros)

    @property
    def features(self) -> dict[str, float]:
        return _usd(self.feature_micros)

    @property
    def endpoints(self) -> dict[str, float]:
        return _usd(self.endpoint_micros)

    def add(self, usage: Usage) -> None:
        micros = usage.cost_micros
        self.total_micros += micros
        _bump(self.model_micros, usage.model, micros)
        if usage.feature:
            _bump(self.feature_micros, usage.feature, micros)
        if usage.endpoint:
            _bump(self.endpoint_micros, usage.endpoint, micros)

    def merge(self, other: SpendTotals) -> SpendTotals:
        """These totals plus ``other``'s (a new object)."""
        out = self.copy()
        out.total_micros += other.total_micros
        for mine, theirs in (
            (out.model_micros, other.model_micros),
            (out.feature_micros, other.feature_micros),
            (out.endpoint_micros, other.endpoint_micros),
        ):
            for name, micros in theirs.items():
                _bump(mine, name, micros)
        return out

    def copy(self) -> SpendTotals:
        return SpendTotals(
            self.total_micros,
            dict(self.model_micros),
            dict(self.feature_micros),
            dict(self.endpoint_micros),
        )


def _bump(counts: dict[str, int], name: str, micros: int) -> None:
    counts[name] = counts.get(name, 0) + micros


ALL_TENANTS = "*"
"""The ``tenant`` of `SpendStore.daily` that sums every tenant."""


class SpendStore(Protocol):
    def record(self, usage: Usage) -> SpendTotals | None:
        """Add ``usage``; return the tenant's new totals in its budget window, or None if
        already counted."""
        ...

    def window_totals(self, windows: Mapping[str, str]) -> dict[str, SpendTotals]:
        """For each tenant → window key in ``windows``: its totals in that window (those
        that spent nothing in theirs are absent)."""
        ...

    def totals(self, period: str) -> dict[str, SpendTotals]:
        """Every tenant's totals for ``period``."""
        ...

    def spent(self, period: str) -> dict[str, float]:
        """Every tenant's total spend in ``period``: what ranking tenants needs, nothing more."""
        ...

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        """The totals of ``tenants`` in ``period`` (those that spent nothing are absent)."""
        ...

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        """Totals per day of ``period`` (``YYYY-MM-DD`` → totals) of one tenant, or of all."""
        ...

    def cells(
        self, granularity: Granularity, buckets: Sequence[str], tenants: Sequence[str]
    ) -> list[Cell]:
        """The non-empty cells of ``tenants`` in ``buckets`` (those still kept)."""
        ...

    def tenants_on(self, days: Sequence[str]) -> set[str]:
        """The tenants with a day cell on any of ``days``."""
        ...

    def ping(self) -> bool: ...


_CellMap = dict[str, dict[str, dict[Combo, int]]]
"""Bucket → tenant → combination → micro-dollars."""


class InProcessSpendStore:
    """Counters in this process's memory: the embedded default, lost on restart.

    Cells past their retention are dropped whenever a new bucket opens, so memory
    stays bounded like Redis's expiring keys.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._totals: dict[tuple[str, str], SpendTotals] = {}
        self._days: dict[str, dict[str, SpendTotals]] = {}
        """Scope (a tenant, or ALL_TENANTS) → day → totals: one scope's days without a scan."""
        self._cells: dict[Granularity, _CellMap] = {g: {} for g in Granularity}
        self._windows: dict[tuple[str, str], SpendTotals] = {}
        """(window key, tenant) → totals."""
        self._window_expiry: dict[str, datetime] = {}

    def record(self, usage: Usage) -> SpendTotals | None:
        with self._lock:
            if usage.request_id in self._seen:
                return None
            self._seen.add(usage.request_id)
            self._totals.setdefault((usage.period, usage.tenant), SpendTotals()).add(usage)
            if usage.window_key not in self._window_expiry:
                self._drop_closed_windows()
                self._window_expiry[usage.window_key] = usage.window_expiry
            totals = self._windows.setdefault((usage.window_key, usage.tenant), SpendTotals())
            totals.add(usage)
            for scope in (usage.tenant, ALL_TENANTS):
                days = self._days.setdefault(scope, {})
                days.setdefault(usage.day_or_first, SpendTotals()).add(usage)
            for granularity, bucket in (
                (Granularity.HOUR, usage.hour_bucket),
                (Granularity.DAY, usage.day_or_first),
            ):
                self._add_cell(granularity, bucket, usage)
            return totals.copy()

    def _drop_closed_windows(self) -> None:
        now = datetime.now(UTC)
        gone = {key for key, expiry in self._window_expiry.items() if expiry <= now}
        for key in gone:
            del self._window_expiry[key]
        for pair in [pair for pair in self._windows if pair[0] in gone]:
            del self._windows[pair]

    def window_totals(self, windows: Mapping[str, str]) -> dict[str, SpendTotals]:
        with self._lock:
            found = ((tenant, self._windows.get((key, tenant))) for tenant, key in windows.items())
            return {tenant: t.copy() for tenant, t in found if t is not None}

    def _add_cell(self, granularity: Granularity, bucket: str, usage: Usage) -> None:
        cells = self._cells[granularity]
        if bucket not in cells:
            self._drop_expired(granularity)
        tenant = cells.setdefault(bucket, {}).setdefault(usage.tenant, {})
        tenant[usage.combo] = tenant.get(usage.combo, 0) + usage.cost_micros

    def _drop_expired(self, granularity: Granularity) -> None:
        now = datetime.now(UTC)
        cells = self._cells[granularity]
        for bucket in [b for b in cells if expires_at(granularity, b) <= now]:
            del cells[bucket]
        if granularity is Granularity.DAY:
            for days in self._days.values():
                for day in [d for d in days if bucket_start(granularity, d) + DAYS_KEPT <= now]:
                    del days[day]

    def totals(self, period: str) -> dict[str, SpendTotals]:
        with self._lock:
            return {tenant: t.copy() for (p, tenant), t in self._totals.items() if p == period}

    def spent(self, period: str) -> dict[str, float]:
        with self._lock:
            return {tenant: t.total for (p, tenant), t in self._totals.items() if p == period}

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        with self._lock:
            found = ((tenant, self._totals.get((period, tenant))) for tenant in tenants)
            return {tenant: t.copy() for tenant, t in found if t is not None}

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        with self._lock:
            return {
                day: t.copy()
                for day, t in sorted(self._days.get(tenant, {}).items())
                if day.startswith(f"{period}-")
            }

    def cells(
        self, granularity: Granularity, buckets: Sequence[str], tenants: Sequence[str]
    ) -> list[Cell]:
        now = datetime.now(UTC)
        with self._lock:
            kept = self._cells[granularity]
            return [
                Cell(tenant, bucket, combo, micros)
                for bucket in buckets
                if bucket in kept and expires_at(granularity, bucket) > now
                for tenant in tenants
                for combo, micros in sorted(
                    kept[bucket].get(tenant, {}).items(), key=lambda item: combo_field(item[0])
                )
            ]

    def tenants_on(self, days: Sequence[str]) -> set[str]:
        with self._lock:
            kept = self._cells[Granularity.DAY]
            return {tenant for day in days for tenant in kept.get(day, {})}

    def ping(self) -> bool:
        return True


def make_spend_store(redis_url: str | None) -> SpendStore:
    if not redis_url:
        return InProcessSpendStore()
    from nexus_control.budgets.redis_spend import RedisSpendStore

    return RedisSpendStore(redis_url)
