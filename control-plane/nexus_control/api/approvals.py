"""Tool-invocation approvals: a human approver signs off one high-risk tool call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nexus_control import outbox
from nexus_control.api.deps import control_plane, parse_body, read_body, require
from nexus_control.api.errors import ApiError
from nexus_control.approval import MAX_TTL_S, ApprovalError, issue_approval
from nexus_control.budget import NoPolicyError
from nexus_control.keys import load_approval_key
from nexus_control.tokens import Principal, Role

MAX_APPROVAL_BYTES = 64 * 1024

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
approvers = require(Role.APPROVER)

_Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")]


class ToolApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: _Id
    tool: _Id
    arguments: dict[str, Any]
    subject: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    """The caller the approval is for (e.g. ``service:support-agent``); any caller if unset."""
    ttl_seconds: Annotated[int, Field(ge=1, le=MAX_TTL_S)] = 300
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


@router.post(
    "/tools",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ToolApprovalRequest"}}
            },
        }
    },
)
async def approve_tool_call(
    request: Request, principal: Principal = Depends(approvers)
) -> dict[str, Any]:
    """Issue a short-lived token approving one high-risk tool call with exactly these arguments."""
    body = await read_body(request, MAX_APPROVAL_BYTES)
    ask = parse_body(ToolApprovalRequest, body, "invalid_request")
    plane = control_plane(request)

    def issue() -> dict[str, Any]:
        try:
            config = plane.policy_config()
        except NoPolicyError as exc:
            raise ApiError(409, "no_policy", str(exc)) from None
        if ask.tenant not in config.get("tenants", {}):
            raise ApiError(422, "unknown_tenant", f"unknown tenant {ask.tenant!r}")
        tool = config.get("tools", {}).get(ask.tool)
        if tool is None:
            raise ApiError(422, "unknown_tool", f"unknown tool {ask.tool!r}")
        if not tool.get("approval_required"):
            raise ApiError(422, "approval_not_needed", f"tool {ask.tool!r} needs no approval")
        try:
            approval = issue_approval(
                load_approval_key(plane.settings.approval_key_path),
                tenant=ask.tenant,
                tool=ask.tool,
                arguments=ask.arguments,
                approver=principal.name,
                subject=ask.subject,
                ttl_s=ask.ttl_seconds,
            )
        except ApprovalError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        expires = datetime.fromtimestamp(approval.expires_at, UTC).isoformat()
        with plane.db.session() as session:
            outbox.record(
                session,
                "tool_approval.issued",
                principal.name,
                token_id=approval.token_id,
                tenant=ask.tenant,
                tool=ask.tool,
                args_sha256=approval.args_sha256,
                subject=ask.subject,
                expires_at=expires,
                reason=ask.reason,
            )
        return {
            "token": approval.token,
            "token_id": approval.token_id,
            "args_sha256": approval.args_sha256,
            "expires_at": expires,
        }

    return await asyncio.to_thread(issue)
