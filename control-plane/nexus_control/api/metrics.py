"""Prometheus metrics, computed at scrape time from the fleet and rollout state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nexus_control.api.deps import OperatorDep, PlaneDep
from nexus_control.plane import ControlPlane
from nexus_control.rollout.states import ACTIVE_STATES, EnforcerState

__all__ = ["FleetCollector", "metrics", "router"]

router = APIRouter(tags=["operations"])


class FleetCollector(Collector):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        convergence = GaugeMetricFamily(
            "nexus_region_convergence_ratio",
            "Share of a region's expected enforcers running its desired revision error-free",
            labels=["region"],
        )
        enforcers = GaugeMetricFamily(
            "nexus_enforcers", "Expected enforcers by state", labels=["region", "state"]
        )
        active = GaugeMetricFamily(
            "nexus_rollout_active",
            "1 while a rollout is rolling, paused or waiting",
            labels=["state"],
        )
        regions = self.plane.rollouts.status().regions
        current = self.plane.rollouts.active_state()
        for region in regions:
            convergence.add_metric([region.region], region.convergence)
            for state in EnforcerState:
                count = sum(e.state is state for e in region.enforcers)
                enforcers.add_metric([region.region, state.value], count)
        for rollout_state in ACTIVE_STATES:
            active.add_metric([rollout_state.value], 1.0 if current is rollout_state else 0.0)
        yield convergence
        yield enforcers
        yield active
        yield from _usage_intake(self.plane)


def _usage_intake(plane: ControlPlane) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
