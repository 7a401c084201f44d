"""What enforcers call: OPA's bundle protocol (long polling) and status reports.

The protocol itself is `nexus_control.serving.protocol`; this router parses,
authorises and answers. Every bundle answer carries
``Content-Type: application/vnd.openpolicyagent.bundles`` (without it OPA
stops long polling).
"""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Request, Response

from nexus_contract.wire import BUNDLE_CONTENT_TYPE, BUNDLES, OPA_API_PREFIX
from nexus_control.api.deps import EnforcerDep, PlaneDep, enforcer_identity
from nexus_control.serving.enforcers import StatusReport
from nexus_control.serving.protocol import answer_poll, held_revision, long_poll_wait
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["MAX_STATUS_BYTES", "get_bundle", "post_status", "router"]

MAX_STATUS_BYTES = 1024 * 1024

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

router = APIRouter(prefix=OPA_API_PREFIX, tags=["enforcers"])


@router.get(
    "/bundles/{region}/{bundle}",
    response_class=Response,
    responses={200: {"content": {BUNDLE_CONTENT_TYPE: {}}}, 304: {"description": "Not modified"}},
)
async def get_bundle(
    region: str, bundle: str, request: Request, plane: PlaneDep, principal: EnforcerDep
) -> Response:
    """Serve a region's bundle to an enforcer (OPA bundle protocol with long polling)."""
    if bundle not in BUNDLES:
        raise ApiError(404, "not_found", f"unknown bundle {bundle!r}; known: {', '.join(BUNDLES)}")
    if not _REGION.match(region):
        raise ApiError(400, "invalid_region", "region must be a lower-case id")
    answer = await answer_poll(
        plane.serving,
        enforcer=enforcer_identity(request, principal, region),
        region=region,
        bundle=bundle,
        held=held_revision(request.headers.get("if-none-match")),
        wait_s=long_poll_wait(request.headers.get("prefer"), plane.settings.long_poll_max_s),
        disconnected=request.is_disconnected,
    )
    if answer.revision is None:
        raise ApiError(404, "no_bundle", f"no {bundle} revision is assigned to region {region}")
    headers = {
        "etag": f'"{answer.revision}"',
        "content-type": BUNDLE_CONTENT_TYPE,
        "cache-control": "no-store",
    }
    if answer.archive is None:
        return Response(status_code=304, headers=headers)
    return Response(content=answer.archive, status_code=200, headers=headers)


@router.post("/status", status_code=204, response_class=Response)
async def post_status(request: Request, plane: PlaneDep, principal: EnforcerDep) -> Response:
    """Take one OPA status report: active revision and activation errors per bundle."""
    enforcer = enforcer_identity(request, principal, None)
    body = await read_body(request, MAX_STATUS_BYTES, allow_gzip=True)
    report = parse_body(StatusReport, body, "invalid_status")
    assert principal.region is not None
    await asyncio.to_thread(plane.serving.record_status, enforcer, principal.region, report)
    return Response(status_code=204)
