"""Publishing and reading bundle revisions."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from nexus_control.api.deps import AuthorDep, PlaneDep, ReaderDep
from nexus_control.api.models import BundleDetail, BundleList, PublishResult, RolloutBrief
from nexus_control.registry.revisions import MAX_ARCHIVE_BYTES
from nexus_runtime.http import ApiError, read_body

__all__ = ["get_bundle_revision", "list_bundles", "publish", "router"]

router = APIRouter(prefix="/v1/bundles", tags=["bundles"])


@router.post(
    "",
    status_code=201,
    response_model=PublishResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def publish(request: Request, plane: PlaneDep, principal: AuthorDep) -> PublishResult:
    """Publish a signed bundle archive built by ``nexus-policy build``."""
    archive = await read_body(request, MAX_ARCHIVE_BYTES)
    if not archive:
        raise ApiError(400, "empty_body", "send the bundle archive as the request body")
    publication = await asyncio.to_thread(plane.rollouts.publish, archive, principal.name)
    published = publication.published
    return PublishResult(
        revision=published.revision,
        bundle=published.bundle,
        created=published.created,
        git_commit=published.git_commit,
        rollout=RolloutBrief.model_validate(publication.rollout),
        diff=publication.diff,
    )


@router.get("", response_model=BundleList)
async def list_bundles(plane: PlaneDep, _: ReaderDep) -> BundleList:
    """Published revisions, newest first."""
    rows = await asyncio.to_thread(plane.registry.history)
    return BundleList.model_validate({"revisions": rows})


@router.get("/{revision}", response_model=BundleDetail)
async def get_bundle_revision(revision: str, plane: PlaneDep, _: ReaderDep) -> BundleDetail:
    """One revision's metadata and manifest."""
    return BundleDetail.model_validate(await asyncio.to_thread(plane.registry.get, revision))
