"""Shadow evaluation: the operator puts a published revision in shadow for a region, and
that region's enforcers download it (signed, like any bundle) beside the active one.

The enforcer side follows OPA's bundle protocol with plain polling (ETag = revision,
``If-None-Match`` → 304): the candidate is judged on a sample, so a change reaching
it a poll later costs nothing, and it holds no request open.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from nexus_contract.wire import BUNDLE_CONTENT_TYPE, OPA_API_PREFIX, POLICY_BUNDLE, SHADOW_BUNDLE
from nexus_control.api.deps import EnforcerDep, OperatorDep, PlaneDep, ReaderDep, enforcer_identity
from nexus_control.api.models import Reason, ShadowList, ShadowRequest, ShadowView
from nexus_control.rollout.shadow import assign_shadow, clear_shadow, shadow_targets
from nexus_control.serving.protocol import held_revision
from nexus_runtime.http import ApiError

__all__ = ["end_shadow", "get_shadow_bundle", "list_shadows", "put_in_shadow", "router"]

router = APIRouter(tags=["shadow"])

RegionPath = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@router.get("/v1/shadow", response_model=ShadowList)
async def list_shadows(plane: PlaneDep, _: ReaderDep) -> ShadowList:
    """Every region's shadow candidate, and the revision it is compared with."""

    def read() -> ShadowList:
        with plane.db.session() as session:
            return ShadowList.model_validate({"shadows": shadow_targets(session)})

    return await asyncio.to_thread(read)


@router.post("/v1/shadow", response_model=ShadowView, status_code=201)
async def put_in_shadow(body: ShadowRequest, plane: PlaneDep, principal: OperatorDep) -> ShadowView:
    """Put a published, signed revision in shadow for one region (audited).

    Refused (422) for a region the fleet does not know, a revision not in the
    registry or not yet signed, and the revision the region already runs.
    """
    regions = plane.known_regions()

    def assign() -> ShadowView:
        with plane.db.session() as session:
            target = assign_shadow(
                session, regions, body.region, body.revision, principal.name, body.reason
            )
            return ShadowView.model_validate(target)

    return await asyncio.to_thread(assign)


@router.post("/v1/shadow/{region}/end", status_code=204, response_class=Response)
async def end_shadow(
    region: RegionPath, body: Reason, plane: PlaneDep, principal: OperatorDep
) -> Response:
    """End a region's shadow evaluation (audited); its enforcers then get 404 and keep none."""

    def clear() -> None:
        with plane.db.session() as session:
            clear_shadow(session, region, principal.name, body.reason)

    await asyncio.to_thread(clear)
    return Response(status_code=204)


@router.get(
    OPA_API_PREFIX + "/shadow/{region}/{bundle}",
    response_class=Response,
    responses={200: {"content": {BUNDLE_CONTENT_TYPE: {}}}, 304: {"description": "Not modified"}},
)
async def get_shadow_bundle(
    region: str, bundle: str, request: Request, plane: PlaneDep, principal: EnforcerDep
) -> Response:
    """Serve a region's shadow candidate to one of its enforcers (signed, as any bundle)."""
    if bundle != POLICY_BUNDLE:
        raise ApiError(404, "not_found", f"only the {POLICY_BUNDLE} bundle has a shadow")
    if not _REGION.match(region):
        raise ApiError(400, "invalid_region", "region must be a lower-case id")
    enforcer_identity(request, principal, region)
    revision = await asyncio.to_thread(plane.serving.served_revision, region, SHADOW_BUNDLE)
    if revision is None:
        raise ApiError(404, "no_shadow", f"region {region} has no shadow candidate")
    headers = {
        "etag": f'"{revision}"',
        "content-type": BUNDLE_CONTENT_TYPE,
        "cache-control": "no-store",
    }
    if held_revision(request.headers.get("if-none-match")) == revision:
        return Response(status_code=304, headers=headers)
    archive = await asyncio.to_thread(plane.registry.archive, revision)
    return Response(content=archive, status_code=200, headers=headers)
