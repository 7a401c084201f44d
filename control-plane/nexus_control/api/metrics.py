"""Prometheus metrics, computed at scrape time from the fleet and rollout state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nexus_control import rollout
from nexus_control.api.deps import control_plane, require
from nexus_control.service import ControlPlane
from nexus_control.tokens import Principal, Role

router = APIRouter(tags=["operations"])
scrapers = require(Role.OPERATOR)

_STATES = ("active", "pending", "failed", "down")


class FleetCollector(Collector):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
        with self.plane.db.session() as session:
            regions = rollout.region_states(
                session, self.plane.fleet, [r.id for r in self.plane.fleet.regions]
            )
            current = rollout.latest_active(session)
        for region in regions:
            convergence.add_metric([region.region], region.convergence)
            for state in _STATES:
                count = sum(e.state == state for e in region.enforcers)
                enforcers.add_metric([region.region, state], count)
        for state in rollout.ACTIVE_STATES:
            active.add_metric(
                [state], 1.0 if current is not None and current.state == state else 0.0
            )
        yield convergence
        yield enforcers
        yield active


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, principal: Principal = Depends(scrapers)) -> Response:
    """Prometheus exposition format (scrape with an operator token)."""
    plane = control_plane(request)
    registry = CollectorRegistry()
    registry.register(FleetCollector(plane))
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
