"""Provider and model health: a probe reports what it observes in its region; operators
and authors read it back. Degraded and down targets reach every enforcer through the
state bundle, where the policy routes to a model's fallback."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from nexus_control.api.deps import HealthReaderDep, PlaneDep, ProbeDep
from nexus_control.api.models import HealthList, HealthRecorded, TargetHealthView
from nexus_control.health.reports import HealthReport, ReportRefusedError
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["MAX_HEALTH_BYTES", "list_model_health", "report_model_health", "router"]

MAX_HEALTH_BYTES = 4 * 1024

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.post(
    "/models",
    status_code=202,
    response_model=HealthRecorded,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HealthReport"}}
            },
        }
    },
)
async def report_model_health(
    request: Request, plane: PlaneDep, principal: ProbeDep
) -> HealthRecorded:
    """Record one observation of a model or provider in the probe's region."""
    report = parse_body(HealthReport, await read_body(request, MAX_HEALTH_BYTES), "invalid_health")
    try:
        recorded = await asyncio.to_thread(
            plane.budgets.record_health,
            report,
            reporter=principal.name,
            bound_region=principal.region,
        )
    except ReportRefusedError as refused:
        raise ApiError(refused.status, refused.code, str(refused)) from refused
    return HealthRecorded.model_validate(recorded)


@router.get("/models", response_model=HealthList)
async def list_model_health(plane: PlaneDep, _: HealthReaderDep) -> HealthList:
    """The last observation of every model and provider, per region."""
    rows = await asyncio.to_thread(plane.budgets.health)
    return HealthList(targets=[TargetHealthView.model_validate(r) for r in rows])
