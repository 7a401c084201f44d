"""What the gateway calls: ``POST /v1/usage`` after each request it served."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from nexus_control.api.deps import GatewayDep, PlaneDep
from nexus_control.api.models import UsageResult
from nexus_control.budgets.backpressure import UsageBusyError
from nexus_control.budgets.usage import GatewayScopeError, UsageReport
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["MAX_USAGE_BYTES", "post_usage", "router"]

MAX_USAGE_BYTES = 16 * 1024

router = APIRouter(tags=["gateway"])


@router.post(
    "/v1/usage",
    status_code=202,
    response_model=UsageResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/UsageReport"}}
            },
        }
    },
)
async def post_usage(request: Request, plane: PlaneDep, gateway: GatewayDep) -> UsageResult:
    """Count one request's spend (idempotent on request_id); may refuse the tenant from now on.

    The token speaks only for the tenants it was scoped to (403 otherwise); usage in the
    future or for an unknown model or feature is refused with 422. Past the intake's
    threshold of reports in flight, 429 with retry-after before the body is read.
    """
    try:
        admitted = plane.usage_gate.admit()
        admitted.__enter__()
    except UsageBusyError as exc:
        raise ApiError(
            429, "busy", str(exc), headers={"retry-after": str(exc.retry_after_s)}
        ) from None
    try:
        report = parse_body(UsageReport, await read_body(request, MAX_USAGE_BYTES), "invalid_usage")
        if not gateway.may_report_for(report.tenant):
            raise GatewayScopeError(
                f"this gateway token may not report usage for tenant {report.tenant!r}"
            )
        outcome = await asyncio.to_thread(plane.budgets.record_usage, report)
    finally:
        admitted.__exit__(None, None, None)
    return UsageResult.model_validate(outcome)
