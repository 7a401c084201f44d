"""What enforcers call: OPA's bundle protocol (long polling) and status reports.

``GET /v1/opa/bundles/{region}/{bundle}``: ETag is the revision; an
``If-None-Match`` naming the desired revision gets 304, held for up to the
``wait=N`` of OPA's ``Prefer`` header while nothing changes. Every answer
carries ``Content-Type: application/vnd.openpolicyagent.bundles`` (without
it OPA stops long polling). Each poll records what the enforcer holds.
"""

from __future__ import annotations

import asyncio
import re
import time

from fastapi import APIRouter, Depends, Request, Response

from nexus_control.api.deps import (
    control_plane,
    enforcer_identity,
    parse_body,
    read_body,
    require,
)
from nexus_control.api.errors import ApiError
from nexus_control.fleet import StatusError, StatusReport
from nexus_control.service import BUNDLES, bundle_key
from nexus_control.tokens import Principal, Role

BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
MAX_STATUS_BYTES = 1024 * 1024
ERRORED_HOLD_S = 1
RECHECK_S = 1.0
"""A held poll re-reads the database this often, so a change made by another
control-plane process is seen even without an in-process notification."""

_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d{1,6})(?:$|[;,\s])")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

router = APIRouter(prefix="/v1/opa", tags=["enforcers"])
enforcer_only = require(Role.ENFORCER)


def held_revision(if_none_match: str | None) -> str | None:
    """The revision the enforcer holds: the first entity tag of If-None-Match."""
    if not if_none_match:
        return None
    first = if_none_match.split(",")[0].strip()
    first = first.removeprefix("W/").strip('"')
    return first or None


def long_poll_wait(prefer: str | None, limit_s: int) -> int:
    if not prefer:
        return 0
    match = _WAIT.search(prefer)
    return min(int(match.group(1)), limit_s) if match else 0


@router.get(
    "/bundles/{region}/{bundle}",
    responses={200: {"content": {BUNDLE_CONTENT_TYPE: {}}}, 304: {"description": "Not modified"}},
)
async def get_bundle(
    region: str,
    bundle: str,
    request: Request,
    principal: Principal = Depends(enforcer_only),
) -> Response:
    """Serve a region's bundle to an enforcer (OPA bundle protocol with long polling)."""
    if bundle not in BUNDLES:
        raise ApiError(404, "not_found", f"unknown bundle {bundle!r}; known: {', '.join(BUNDLES)}")
    if not _REGION.match(region):
        raise ApiError(400, "invalid_region", "region must be a lower-case id")
    enforcer = enforcer_identity(request, principal, region)
    plane = control_plane(request)
    held = held_revision(request.headers.get("if-none-match"))
    wait = long_poll_wait(request.headers.get("prefer"), plane.settings.long_poll_max_s)

    errored = await asyncio.to_thread(plane.record_poll, enforcer, region, bundle, held)
    served = await asyncio.to_thread(plane.served_revision, region, bundle)
    started = time.monotonic()
    deadline = started + wait
    while served is not None and served == held and time.monotonic() < deadline:
        if errored:
            # OPA clears an activation error only on the 304 that ends a poll;
            # after a rollback to what it holds, that 304 should come soon, not
            # at the end of a 30 s hold. (A short hold, not none: a stuck error
            # must not spin a poll loop.) The error may be reported while the
            # poll is already held, so it is looked at again on every recheck.
            deadline = min(deadline, started + ERRORED_HOLD_S)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await plane.notifier.wait(bundle_key(region, bundle), min(RECHECK_S, remaining))
        if await request.is_disconnected():
            return Response(status_code=304)
        served, errored = await asyncio.to_thread(plane.poll_view, enforcer, region, bundle)

    if wait:
        await asyncio.to_thread(plane.touch, enforcer, region)
    if served is None:
        raise ApiError(404, "no_bundle", f"no {bundle} revision is assigned to region {region}")
    headers = {
        "etag": f'"{served}"',
        "content-type": BUNDLE_CONTENT_TYPE,
        "cache-control": "no-store",
    }
    if served == held:
        return Response(status_code=304, headers=headers)
    archive = await asyncio.to_thread(plane.archive, region, bundle, served)
    return Response(content=archive, status_code=200, headers=headers)


@router.post("/status", status_code=204)
async def post_status(request: Request, principal: Principal = Depends(enforcer_only)) -> Response:
    """Take one OPA status report: active revision and activation errors per bundle."""
    enforcer = enforcer_identity(request, principal, None)
    body = await read_body(request, MAX_STATUS_BYTES, allow_gzip=True)
    report = parse_body(StatusReport, body, "invalid_status")
    label_region = report.labels.get("region")
    if label_region is not None and label_region != principal.region:
        raise ApiError(
            400, "invalid_status", f"labels.region {label_region!r} is not this token's region"
        )
    plane = control_plane(request)
    assert principal.region is not None
    try:
        await asyncio.to_thread(plane.record_status, enforcer, principal.region, report)
    except StatusError as exc:
        raise ApiError(400, "invalid_status", str(exc)) from None
    return Response(status_code=204)
