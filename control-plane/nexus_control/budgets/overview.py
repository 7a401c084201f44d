"""Spend against caps for one period: what the cost dashboard shows and `GET /v1/budgets` answers.

Caps come from the policy in force (the canary's last good revision), spend
from the counters, disabled tenants from the database. Anomalies are the
detector's findings (`nexus_control.budgets.anomaly`) on the platform's daily
spend and, for the period's `ANOMALY_TENANTS` biggest spenders, on each one's daily
spend, its daily spend per model and per feature, and its hourly spend.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets.anomaly import detect, detect_hourly
from nexus_control.budgets.cells import (
    HOURS_KEPT,
    Granularity,
    bucket_of,
    bucket_start,
    buckets_between,
)
from nexus_control.budgets.money import to_usd
from nexus_control.budgets.spend import ALL_TENANTS, SpendStore, SpendTotals
from nexus_control.store.tables import DisabledTenant

__all__ = [
    "ANOMALY_TENANTS",
    "PAGE_TENANTS",
    "SCORED_HOURS",
    "Anomaly",
    "CapState",
    "SpendOverview",
    "SpendPage",
    "TenantSpend",
    "spend_overview",
    "spend_page",
]

ANOMALY_TENANTS = 20
"""How many of the period's biggest spenders are checked for anomalies, one by one."""
SCORED_HOURS = 24
"""Hours each overview scores for spikes (the watch scans every few minutes, so a finding
is recorded long before its hour leaves this window)."""
PAGE_TENANTS = 50
"""Tenants on a page of `spend_page` (the console's budgets page)."""


class CapState(StrEnum):
    UNDER = "under"
    SOFT = "soft"
    """At or past the soft cap: requests carry the warning header."""
    HARD = "hard"
    """At or past the hard cap: refused (or the tenant disabled)."""
    DISABLED = "disabled"


@dataclass(frozen=True)
class TenantSpend:
    tenant: str
    name: str
    plan: str
    spend_usd: float
    cap_usd: float
    soft_cap_ratio: float
    ratio: float
    state: CapState
    on_hard_cap: str
    disabled_reason: str | None
    models: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    """Model → (spend, its own cap or None)."""
    features: dict[str, tuple[float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Anomaly:
    day: str
    tenant: str
    """A tenant id, or ``*`` for the whole platform."""
    kind: str
    """``spike`` (one day, or one hour) or ``drift`` (the level of the last week)."""
    spend_usd: float
    """The day's (or hour's) spend, or a drift's recent daily level."""
    baseline_usd: float
    """What the detector expected: the day's seasonal baseline, or a drift's old level."""
    model: str | None = None
    """Set when the series was the tenant's spend on this model alone."""
    feature: str | None = None
    """Set when the series was the tenant's spend on this feature alone."""
    hour: str | None = None
    """The UTC hour (``YYYY-MM-DDTHH``) of an hourly spike; ``day`` is its day."""

    @property
    def scope(self) -> str:
        """What the series was: ``platform``, ``tenant``, ``model``, ``feature`` (the
        tenant's spend on one of them, by day) or ``hour`` (the tenant's, by hour)."""
        if self.tenant == ALL_TENANTS:
            return "platform"
        if self.hour is not None:
            return "hour"
        if self.model is not None:
            return "model"
        return "feature" if self.feature is not None else "tenant"

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two findings the same finding (a watch records each once)."""
        return (self.tenant, self.hour or self.day, self.kind, self.model or "", self.feature or "")


@dataclass(frozen=True)
class SpendOverview:
    period: str
    in_force: bool
    """False when no policy is in force yet (no caps known)."""
    tenants: list[TenantSpend]
    """Every tenant the policy knows, the highest ratio first."""
    daily: dict[str, SpendTotals]
    """All tenants' spend per day of the period."""
    anomalies: list[Anomaly]

    @property
    def total_usd(self) -> float:
        return sum(t.spend_usd for t in self.tenants)


@dataclass(frozen=True)
class SpendPage:
    """`SpendOverview` for one page of tenants: the rest of them only counted and summed."""

    period: str
    in_force: bool
    tenants: list[TenantSpend]
    """The page's tenants, the highest ratio first (ties by id), as `SpendOverview` orders them."""
    tenant_count: int
    """How many tenants the policy knows."""
    total_usd: float
    """All of their spend in the period."""
    disabled_count: int
    daily: dict[str, SpendTotals]
    anomalies: list[Anomaly]


def spend_overview(
    session: Session,
    store: SpendStore,
    config: CompiledConfig | None,
    period: str,
    windows: Mapping[str, str] | None = None,
) -> SpendOverview:
    """Every tenant's spend in ``period`` against its caps, the daily series and anomalies.

    ``windows`` (tenant → key of its budget window open now, for the current month) also
    flags a tenant disabled in a window not keyed like the month (a week, a day).
    """
    totals = store.totals(period)
    disabled = _disabled(session, period, windows)
    tenants = config["tenants"] if config is not None else {}
    rows = [
        _row(tenant_id, tenant, totals.get(tenant_id, SpendTotals()), disabled)
        for tenant_id, tenant in sorted(tenants.items())
    ]
    rows.sort(key=lambda row: (-row.ratio, row.tenant))
    daily = store.daily(period)
    spent = {tenant_id: t.total for tenant_id, t in totals.items()}
    return SpendOverview(
        period, config is not None, rows, daily, _period_anomalies(store, period, daily, spent)
    )


def spend_page(
    session: Session,
    store: SpendStore,
    config: CompiledConfig | None,
    period: str,
    *,
    limit: int = PAGE_TENANTS,
    tenant: str | None = None,
    windows: Mapping[str, str] | None = None,
) -> SpendPage:
    """What `spend_overview` says of ``period``, for its first ``limit`` tenants (or ``tenant``).

    Ranking needs one number per tenant (its total, against its cap); only the
    page's tenants have their spend by model and feature read and built.
    """
    spent = store.spent(period)
    disabled = _disabled(session, period, windows)
    tenants = config["tenants"] if config is not None else {}
    if tenant is not None:
        chosen = [tenant] if tenant in tenants else []
    else:
        ranked = heapq.nsmallest(
            limit,
            ((-_ratio(spent.get(tid, 0.0), t["budget"]), tid) for tid, t in tenants.items()),
        )
        chosen = [tid for _, tid in ranked]
    totals = store.totals_of(period, chosen)
    rows = [_row(tid, tenants[tid], totals.get(tid, SpendTotals()), disabled) for tid in chosen]
    daily = store.daily(period)
    return SpendPage(
        period=period,
        in_force=config is not None,
        tenants=rows,
        tenant_count=len(tenants),
        total_usd=sum(round(spent.get(tid, 0.0), 6) for tid in tenants),
        disabled_count=sum(tid in disabled for tid in tenants),
        daily=daily,
        anomalies=_period_anomalies(store, period, daily, spent),
    )


def _disabled(session: Session, period: str, windows: Mapping[str, str] | None) -> dict[str, str]:
    keys = {period, *(windows or {}).values()}
    return {
        row.tenant: row.reason
        for row in session.scalars(
            select(DisabledTenant).where(DisabledTenant.period.in_(sorted(keys)))
        )
        if row.period == period or (windows or {}).get(row.tenant) == row.period
    }


def _ratio(spent: float, budget: Mapping[str, Any], *, exact: bool = False) -> float:
    """Spend over the monthly cap: as the page shows and ranks it (rounded to 6 places), or
    ``exact`` (what the cap state compares)."""
    cap = float(budget["monthly_cap_usd"])
    ratio = spent / cap if cap > 0 else 0.0
    return ratio if exact else round(ratio, 6)


def _row(
    tenant_id: str, tenant: Mapping[str, Any], spent: SpendTotals, disabled: Mapping[str, str]
) -> TenantSpend:
    budget = tenant["budget"]
    cap = float(budget["monthly_cap_usd"])
    ratio = _ratio(spent.total, budget, exact=True)
    soft = float(budget["soft_cap_ratio"])
    if tenant_id in disabled:
        cap_state = CapState.DISABLED
    elif ratio >= 1:
        cap_state = CapState.HARD
    elif ratio >= soft:
        cap_state = CapState.SOFT
    else:
        cap_state = CapState.UNDER
    per_model = budget.get("per_model", {})
    per_feature = budget.get("per_feature", {})
    return TenantSpend(
        tenant=tenant_id,
        name=tenant["name"],
        plan=tenant["plan"],
        spend_usd=round(spent.total, 6),
        cap_usd=cap,
        soft_cap_ratio=soft,
        ratio=round(ratio, 6),
        state=cap_state,
        on_hard_cap=budget["on_hard_cap"],
        disabled_reason=disabled.get(tenant_id),
        models={
            m: (round(spent.models.get(m, 0.0), 6), per_model.get(m))
            for m in sorted(set(spent.models) | set(per_model))
        },
        features={
            f: (round(spent.features.get(f, 0.0), 6), per_feature.get(f))
            for f in sorted(set(spent.features) | set(per_feature))
        },
    )


def _period_anomalies(
    store: SpendStore, period: str, daily: dict[str, SpendTotals], spent: Mapping[str, float]
) -> list[Anomaly]:
    """The platform's anomalies and those of the period's `ANOMALY_TENANTS` biggest spenders:
    each one's daily spend, its daily spend per model and per feature, and its last
    `SCORED_HOURS` hours."""
    anomalies = _anomalies(store, period, ALL_TENANTS) if daily else []
    biggest = sorted(spent.items(), key=lambda item: -item[1])[:ANOMALY_TENANTS]
    for tenant_id, _ in biggest:
        anomalies += _anomalies(store, period, tenant_id)
        anomalies += _hourly_anomalies(store, tenant_id)
    anomalies.sort(key=lambda a: (a.hour or a.day, a.tenant, a.scope), reverse=True)
    return anomalies


def _anomalies(store: SpendStore, period: str, tenant: str) -> list[Anomaly]:
    """The detector's findings on ``period``'s days, from series that start a period
    earlier (days without spend are zero): the tenant's total, then (for a tenant, not the
    platform) each model's and each feature's share of it."""
    first = date.fromisoformat(f"{period}-01")
    earlier = (first - timedelta(days=1)).strftime("%Y-%m")
    daily = {**store.daily(earlier, tenant), **store.daily(period, tenant)}
    if not daily:
        return []
    start = date.fromisoformat(f"{earlier}-01")
    end = date.fromisoformat(max(daily))
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    totals = [daily.get(day.isoformat(), SpendTotals()) for day in days]
    whole = [t.total for t in totals]
    series: list[tuple[dict[str, str], list[float]]] = [({}, whole)]
    if tenant != ALL_TENANTS:
        for name in sorted({m for t in totals for m in t.models}):
            series.append(({"model": name}, [t.models.get(name, 0.0) for t in totals]))
        for name in sorted({f for t in totals for f in t.features}):
            series.append(({"feature": name}, [t.features.get(name, 0.0) for t in totals]))
    # A model or feature that is all of the tenant's spend would only repeat its findings.
    same = [round(v, 6) for v in whole]
    series = series[:1] + [(d, v) for d, v in series[1:] if [round(x, 6) for x in v] != same]
    return [
        Anomaly(
            f.day.isoformat(),
            tenant,
            f.kind,
            round(f.spend_usd, 6),
            round(f.baseline_usd, 6),
            **dimension,
        )
        for dimension, values in series
        for f in detect(list(zip(days, values, strict=True)))
        if f.day >= first
    ]


def _hourly_anomalies(store: SpendStore, tenant: str) -> list[Anomaly]:
    """Spikes in ``tenant``'s last `SCORED_HOURS` complete hours, against the hours kept
    before them (`HOURS_KEPT`)."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - HOURS_KEPT
    buckets = buckets_between(Granularity.HOUR, start, end)
    spent: dict[str, int] = {}
    for cell in store.cells(Granularity.HOUR, buckets, [tenant]):
        spent[cell.bucket] = spent.get(cell.bucket, 0) + cell.micros
    if not spent:
        return []
    series = [
        (bucket_start(Granularity.HOUR, bucket), to_usd(spent.get(bucket, 0))) for bucket in buckets
    ]
    return [
        Anomaly(
            f.hour.date().isoformat(),
            tenant,
            "spike",
            round(f.spend_usd, 6),
            round(f.baseline_usd, 6),
            hour=bucket_of(Granularity.HOUR, f.hour),
        )
        for f in detect_hourly(series, last=SCORED_HOURS)
    ]
