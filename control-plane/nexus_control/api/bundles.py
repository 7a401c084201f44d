"""Publishing and reading bundle revisions."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from nexus_control import registry
from nexus_control.api.deps import control_plane, read_body, require
from nexus_control.api.errors import ApiError
from nexus_control.registry import MAX_ARCHIVE_BYTES, PublishError
from nexus_control.tables import BundleRevision
from nexus_control.tokens import Principal, Role

authors = require(Role.AUTHOR)

router = APIRouter(prefix="/v1/bundles", tags=["bundles"])
readers = require(Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE)


def _summary(row: BundleRevision) -> dict[str, Any]:
    return {
        "revision": row.revision,
        "bundle": row.bundle,
        "sha256": row.sha256,
        "size": row.size,
        "git_commit": row.git_commit,
        "author": row.author,
        "published_at": row.published_at.isoformat(),
    }


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def publish(request: Request, principal: Principal = Depends(authors)) -> dict[str, Any]:
    """Publish a signed bundle archive built by ``nexus-policy build``."""
    archive = await read_body(request, MAX_ARCHIVE_BYTES)
    if not archive:
        raise ApiError(400, "empty_body", "send the bundle archive as the request body")
    plane = control_plane(request)
    try:
        published = await asyncio.to_thread(plane.publish, archive, principal.name)
    except PublishError as exc:
        raise ApiError(422, "invalid_bundle", str(exc)) from None
    return {
        "revision": published.published.revision,
        "bundle": published.published.bundle,
        "created": published.published.created,
        "git_commit": published.published.git_commit,
        "rollout": {
            "id": published.rollout_id,
            "state": published.rollout_state,
            "needs_approval": published.needs_approval,
        },
        "diff": published.diff,
    }


@router.get("")
async def list_bundles(request: Request, principal: Principal = Depends(readers)) -> dict[str, Any]:
    """Published revisions, newest first."""
    plane = control_plane(request)

    def read() -> list[dict[str, Any]]:
        with plane.db.session() as session:
            return [_summary(row) for row in registry.history(session)]

    return {"revisions": await asyncio.to_thread(read)}


@router.get("/{revision}")
async def get_bundle_revision(
    revision: str, request: Request, principal: Principal = Depends(readers)
) -> dict[str, Any]:
    """One revision's metadata and manifest."""
    plane = control_plane(request)

    def read() -> dict[str, Any] | None:
        with plane.db.session() as session:
            row = registry.get_revision(session, revision)
            return None if row is None else {**_summary(row), "manifest": row.manifest}

    found = await asyncio.to_thread(read)
    if found is None:
        raise ApiError(404, "not_found", f"no revision {revision}")
    return found
