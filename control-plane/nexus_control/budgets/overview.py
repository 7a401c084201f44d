"""Spend against caps for one period: what the cost dashboard shows and `GET /v1/budgets` answers.

Caps come from the policy in force (the canary's last good revision), spend
from the counters, disabled tenants from the database. An anomaly is a day on
which a tenant (among the period's biggest spenders) or the platform spent
more than `ANOMALY_FACTOR` times the median of its earlier days of the period,
given at least `ANOMALY_MIN_DAYS` of them: a rule a reader can check by eye.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets.anomaly import detect
from nexus_control.budgets.spend import ALL_TENANTS, SpendStore, SpendTotals
from nexus_control.store.tables import DisabledTenant

__all__ = [
    "ANOMALY_TENANTS",
    "PAGE_TENANTS",
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
    """``spike`` (one day) or ``drift`` (the level of the last week)."""
    spend_usd: float
    """The day's spend, or a drift's recent daily level."""
    baseline_usd: float
    """What the detector expected: the day's seasonal baseline, or a drift's old level."""


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
    """The platform's anomalies and those of the period's `ANOMALY_TENANTS` biggest spenders."""
    anomalies = _anomalies(store, period, ALL_TENANTS) if daily else []
    biggest = sorted(spent.items(), key=lambda item: -item[1])[:ANOMALY_TENANTS]
    for tenant_id, _ in biggest:
        anomalies += _anomalies(store, period, tenant_id)
    anomalies.sort(key=lambda a: (a.day, a.tenant), reverse=True)
    return anomalies


def _anomalies(store: SpendStore, period: str, tenant: str) -> list[Anomaly]:
    """The detector's findings on ``period``'s days, from a series that starts a period
    earlier (days without spend are zero)."""
    first = date.fromisoformat(f"{period}-01")
    earlier = (first - timedelta(days=1)).strftime("%Y-%m")
    daily = {**store.daily(earlier, tenant), **store.daily(period, tenant)}
    if not daily:
        return []
    start = date.fromisoformat(f"{earlier}-01")
    end = date.fromisoformat(max(daily))
    series = []
    day = start
    while day <= end:
        totals = daily.get(day.isoformat())
        series.append((day, totals.total if totals is not None else 0.0))
        day += timedelta(days=1)
    return [
        Anomaly(f.day.isoformat(), tenant, f.kind, round(f.spend_usd, 6), round(f.baseline_usd, 6))
        for f in detect(series)
        if f.day >= first
    ]
