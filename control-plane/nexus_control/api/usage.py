"""What the gateway calls: ``POST /v1/usage`` after each request it served."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from nexus_control.api.deps import control_plane, parse_body, read_body, require
from nexus_control.api.errors import ApiError
from nexus_control.budget import NoPolicyError, UnknownTenantError, UsageReport
from nexus_control.tokens import Principal, Role

MAX_USAGE_BYTES = 16 * 1024

gateway_only = require(Role.GATEWAY)

router = APIRouter(tags=["gateway"])


@router.post("/v1/usage", status_code=202)
async def post_usage(
    request: Request, principal: Principal = Depends(gateway_only)
) -> dict[str, Any]:
    """Count one request's spend (idempotent on request_id); may refuse the tenant from now on."""
    body = await read_body(request, MAX_USAGE_BYTES)
    report = parse_body(UsageReport, body, "invalid_usage")
    plane = control_plane(request)
    try:
        outcome = await asyncio.to_thread(plane.record_usage, report)
    except UnknownTenantError as exc:
        raise ApiError(422, "unknown_tenant", str(exc)) from None
    except NoPolicyError as exc:
        raise ApiError(409, "no_policy", str(exc)) from None
    return {
        "counted": outcome.counted,
        "tenant": outcome.tenant,
        "period": outcome.period,
        "ratio": outcome.ratio,
        "disabled": outcome.disabled,
    }
