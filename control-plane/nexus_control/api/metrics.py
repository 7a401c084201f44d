"""Prometheus metrics, computed at scrape time from the fleet, rollout and budget state.

Every label set is bounded: regions and enforcers are the fleet's expected ones, states
are enums, tenants only those of ``NEXUS_METRIC_TENANTS`` (`nexus_control.budgets.metrics`).
Families an alert watches with ``increase()`` or a comparison exist from the first scrape,
at 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nexus_control.api.deps import OperatorDep, PlaneDep
from nexus_control.plane import ControlPlane
from nexus_control.rollout.convergence import convergence_lag_s
from nexus_control.rollout.rollouts import NoPolicyInForceError
from nexus_control.rollout.states import ACTIVE_STATES, EnforcerState, RegionState

__all__ = ["FleetCollector", "metrics", "router"]

router = APIRouter(tags=["operations"])

Family = GaugeMetricFamily | CounterMetricFamily


class FleetCollector(Collector):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Family]:
        regions = self.plane.rollouts.status().regions
        current = self.plane.rollouts.active_state()
        yield from _regions(regions, self.plane.fleet.stale_after_s)
        yield from _enforcers(regions)
        active = GaugeMetricFamily(
            "nexus_rollout_active",
            "1 while a rollout is rolling, paused or waiting",
            labels=["state"],
        )
        for rollout_state in ACTIVE_STATES:
            active.add_metric([rollout_state.value], 1.0 if current is rollout_state else 0.0)
        yield active
        yield from _usage_intake(self.plane)
        yield from _tool_risks(self.plane)
        yield from self.plane.budget_gauges.collect()


def _regions(regions: list[RegionState], stale_after_s: float) -> Iterator[Family]:
    convergence = GaugeMetricFamily(
        "nexus_region_convergence_ratio",
        "Share of a region's expected enforcers running its desired revision error-free",
        labels=["region"],
    )
    enforcers = GaugeMetricFamily(
        "nexus_enforcers", "Expected enforcers by state", labels=["region", "state"]
    )
    lag = GaugeMetricFamily(
        "nexus_region_convergence_lag_seconds",
        "Seconds the region has had a desired revision not every expected enforcer runs "
        "error-free: since the revision was assigned (wave start or rollback), or, for an "
        "enforcer that ran it and went down, since it was last seen plus the fleet's "
        "staleAfterSeconds; 0 when converged, with no desired revision or no expected enforcer",
        labels=["region"],
    )
    now = datetime.now(UTC)
    for region in regions:
        convergence.add_metric([region.region], region.convergence)
        lag.add_metric([region.region], round(convergence_lag_s(region, now, stale_after_s), 3))
        for state in EnforcerState:
            count = sum(e.state is state for e in region.enforcers)
            enforcers.add_metric([region.region, state.value], count)
    yield convergence
    yield enforcers
    yield lag


def _enforcers(regions: list[RegionState]) -> Iterator[Family]:
    info = GaugeMetricFamily(
        "nexus_enforcer_info",
        "1 per expected enforcer: the revision it holds (downloaded) and runs (activated), "
        'and its state; a revision is "" when it has none',
        labels=["region", "enforcer", "held_revision", "active_revision", "state"],
    )
    seen = GaugeMetricFamily(
        "nexus_enforcer_last_seen_age_seconds",
        "Seconds since the enforcer's last bundle poll or status report (no sample before "
        "its first)",
        labels=["region", "enforcer"],
    )
    now = datetime.now(UTC)
    for region in regions:
        for enforcer in region.enforcers:
            info.add_metric(
                [
                    region.region,
                    enforcer.id,
                    enforcer.held_revision or "",
                    enforcer.active_revision or "",
                    enforcer.state.value,
                ],
                1.0,
            )
            if enforcer.last_seen_at is not None:
                age = max(0.0, (now - enforcer.last_seen_at).total_seconds())
                seen.add_metric([region.region, enforcer.id], round(age, 3))
    yield info
    yield seen


def _tool_risks(plane: ControlPlane) -> Iterator[Family]:
    """Each tool's risk in the config in force: what alerts join the enforcers' per-tool
    series with (``NexusShadowDenyToAllow`` on high and critical tools). Bounded by the
    tool catalog."""
    info = GaugeMetricFamily(
        "nexus_tool_risk_info",
        "1 per tool of the policy in force, by its risk",
        labels=["tool", "risk"],
    )
    try:
        tools = plane.rollouts.config_in_force()["tools"]
    except NoPolicyInForceError:
        tools = {}
    for tool, config in sorted(tools.items()):
        info.add_metric([tool, config["risk"]], 1.0)
    yield info


def _usage_intake(plane: ControlPlane) -> Iterator[Family]:
    gate = plane.usage_gate
    yield GaugeMetricFamily(
        "nexus_usage_reports_in_flight", "Usage reports being processed", value=gate.in_flight
    )
    yield GaugeMetricFamily(
        "nexus_usage_reports_max_in_flight",
        "The usage intake's threshold (NEXUS_USAGE_MAX_IN_FLIGHT)",
        value=gate.max_in_flight,
    )
    yield CounterMetricFamily(
        "nexus_usage_reports_refused",
        "Usage reports refused with 429 because the intake was at its threshold",
        value=gate.refused,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(plane: PlaneDep, _: OperatorDep) -> Response:
    """Prometheus exposition format (scrape with an operator token)."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(plane))
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
