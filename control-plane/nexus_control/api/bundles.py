"""Publishing and reading bundle revisions."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from nexus_contract.wire import EXPECTED_REVISION_HEADER, SOURCES_CONTENT_TYPE
from nexus_control.api.deps import AuthorDep, PlaneDep, ReaderDep
from nexus_control.api.models import BundleDetail, BundleList, PublishResult, RolloutBrief
from nexus_control.api.replays import gate_of
from nexus_control.authoring.sources import MAX_SOURCES_BYTES
from nexus_runtime.http import ApiError, read_body

__all__ = ["get_bundle_revision", "list_bundles", "publish", "router"]

router = APIRouter(prefix="/v1/bundles", tags=["bundles"])
_HEX = frozenset("0123456789abcdef")


@router.post(
    "",
    status_code=201,
    response_model=PublishResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {SOURCES_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def publish(request: Request, plane: PlaneDep, principal: AuthorDep) -> PublishResult:
    """Publish a bundle's sources: the control plane builds, tests, diffs and signs them.

    The body is the sources tarball ``nexus-policy publish`` packs; the
    optional ``x-nexus-expected-revision`` header is the revision the
    author's build computed, refused (422) if the control plane's differs.
    A rollout routing traffic to a prompt version or model whose ``quality``
    thresholds its latest evaluation does not meet is refused (422
    ``quality_gate``, each at its file:line), and nothing is stored.
    With replay gates declared, the answer comes after the gate's verdict:
    the rollout is ``held`` when a gate failed.
    """
    expected = request.headers.get(EXPECTED_REVISION_HEADER)
    if expected is not None and (len(expected) != 64 or not set(expected) <= _HEX):
        raise ApiError(400, "invalid_revision", f"{EXPECTED_REVISION_HEADER} is a SHA-256 in hex")
    sources = await read_body(request, MAX_SOURCES_BYTES)
    if not sources:
        raise ApiError(400, "empty_body", "send the bundle's sources as the request body")
    publication = await asyncio.to_thread(
        lambda: plane.rollouts.publish(
            sources,
            principal.name,
            author_id=principal.principal_id,
            expected_revision=expected,
            gate=gate_of(request, plane),
        )
    )
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
