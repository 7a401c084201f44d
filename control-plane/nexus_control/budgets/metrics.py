"""Spend against caps as Prometheus gauges, from the same overview the console shows.

The overview (`nexus_control.budgets.overview.spend_overview`) reads every tenant's
spend and the daily series of the biggest spenders, so a scrape reuses one overview for
`BUDGET_METRICS_TTL_S`: two Prometheus replicas scraping every 15 s compute it about once
per scrape interval, whatever the tenant count. Tenant-labelled series exist only for the
tenants named in ``NEXUS_METRIC_TENANTS`` (at most `MAX_METRIC_TENANTS`) and known to the
policy in force; the others count in ``nexus_budget_tenants`` and the platform total.
Spend by model and by feature is exported for the platform, and per model and feature for
those tenants; each breakdown keeps its `MAX_BREAKDOWN` biggest values and sums the rest
as ``other``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily

from nexus_control.budgets.overview import CapState, SpendOverview
from nexus_control.budgets.spend import day_of

__all__ = ["ANOMALY_SCOPES", "BUDGET_METRICS_TTL_S", "MAX_BREAKDOWN", "BudgetGauges"]

log = logging.getLogger("nexus.control.budgets")

BUDGET_METRICS_TTL_S = 10.0
"""How long one overview serves scrapes: shorter than a 15 s scrape interval."""
ANOMALY_SCOPES = ("platform", "tenant", "model", "feature", "hour")
MAX_BREAKDOWN = 32
"""Label values per breakdown (models, features); the rest are summed as ``other``."""
OTHER = "other"


def _bounded(spend: Mapping[str, float]) -> dict[str, float]:
    """``spend`` with its `MAX_BREAKDOWN` biggest keys, the rest summed as `OTHER`."""
    ranked = sorted(spend.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:MAX_BREAKDOWN])
    rest = sum(v for _, v in ranked[MAX_BREAKDOWN:])
    if rest:
        kept[OTHER] = kept.get(OTHER, 0.0) + rest
    return {k: round(v, 6) for k, v in kept.items()}


@dataclass(frozen=True)
class _Cached:
    overview: SpendOverview
    at: float


class BudgetGauges:
    """The budget families of the control plane's /metrics; one per process."""

    def __init__(
        self,
        overview: Callable[[], SpendOverview],
        tenants: tuple[str, ...],
        *,
        ttl_s: float = BUDGET_METRICS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], str] = lambda: day_of(datetime.now(UTC)),
    ) -> None:
        """``overview``: this period's spend overview; ``today``: the UTC day anomalies count on."""
        self._overview = overview
        self.tenants = tenants
        self._ttl_s = ttl_s
        self._clock = clock
        self._today = today
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def current(self) -> SpendOverview:
        """This period's overview, computed at most once per TTL (concurrent scrapes wait)."""
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached.at >= self._ttl_s:
                self._cached = _Cached(self._overview(), now)
            return self._cached.overview

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The budget families; none when the spend store cannot be read (Redis down), so
        the rest of the scrape still answers and the spend series go absent, not stale."""
        try:
            overview = self.current()
        except Exception:
            log.exception("budget metrics: the spend overview failed; its series are left out")
            return
        by_state = GaugeMetricFamily(
            "nexus_budget_tenants",
            "Tenants of the policy in force by cap state this period (under|soft|hard|disabled)",
            labels=["state"],
        )
        counts = dict.fromkeys(CapState, 0)
        for row in overview.tenants:
            counts[row.state] += 1
        for state, count in counts.items():
            by_state.add_metric([state.value], count)
        yield by_state

        spend = GaugeMetricFamily(
            "nexus_budget_spend_usd",
            "Spend this period (USD), for the tenants in NEXUS_METRIC_TENANTS",
            labels=["tenant"],
        )
        cap = GaugeMetricFamily(
            "nexus_budget_cap_usd",
            "Monthly hard cap (USD) in the policy in force, for NEXUS_METRIC_TENANTS",
            labels=["tenant"],
        )
        ratio = GaugeMetricFamily(
            "nexus_budget_spend_ratio",
            "Spend / hard cap this period (1 = at the cap), for NEXUS_METRIC_TENANTS",
            labels=["tenant"],
        )
        watched = set(self.tenants)
        for row in overview.tenants:
            if row.tenant in watched:
                spend.add_metric([row.tenant], row.spend_usd)
                cap.add_metric([row.tenant], row.cap_usd)
                ratio.add_metric([row.tenant], row.ratio)
        yield spend
        yield cap
        yield ratio
        yield from self._breakdowns(overview, watched)

        yield GaugeMetricFamily(
            "nexus_budget_platform_spend_usd",
            "Spend of all tenants this period (USD)",
            value=round(sum(day.total for day in overview.daily.values()), 6),
        )
        anomalies = GaugeMetricFamily(
            "nexus_spend_anomalies",
            "Spend anomalies found today (UTC): spikes and drifts against a robust "
            "working-day/weekend (hours: hour-of-day) baseline; scope platform (all tenants), "
            "or for one of the period's top spenders: tenant (its daily spend), model or "
            "feature (its daily spend on one), hour (its hourly spend)",
            labels=["scope"],
        )
        today = self._today()
        found = dict.fromkeys(ANOMALY_SCOPES, 0)
        for anomaly in overview.anomalies:
            if anomaly.day == today:
                found[anomaly.scope] += 1
        for scope, count in found.items():
            anomalies.add_metric([scope], count)
        yield anomalies

    @staticmethod
    def _breakdowns(overview: SpendOverview, watched: set[str]) -> Iterator[GaugeMetricFamily]:
        platform: dict[str, dict[str, float]] = {"model": {}, "feature": {}}
        for day in overview.daily.values():
            for kind, spend in (("model", day.models), ("feature", day.features)):
                for key, usd in spend.items():
                    platform[kind][key] = platform[kind].get(key, 0.0) + usd
        for kind, spend in platform.items():
            family = GaugeMetricFamily(
                f"nexus_budget_platform_{kind}_spend_usd",
                f"Spend of all tenants this period by {kind} (USD)",
                labels=[kind],
            )
            for key, usd in _bounded(spend).items():
                family.add_metric([key], usd)
            yield family
        for kind in ("model", "feature"):
            family = GaugeMetricFamily(
                f"nexus_budget_{kind}_spend_usd",
                f"Spend this period by {kind} (USD), for the tenants in NEXUS_METRIC_TENANTS",
                labels=["tenant", kind],
            )
            for row in overview.tenants:
                if row.tenant not in watched:
                    continue
                split = row.models if kind == "model" else row.features
                for key, usd in _bounded({k: v for k, (v, _) in split.items()}).items():
                    family.add_metric([row.tenant, key], usd)
            yield family
