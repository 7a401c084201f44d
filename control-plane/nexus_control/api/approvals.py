"""Tool-invocation approvals: a human approver signs off one high-risk tool call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nexus_control.access.approvals import MAX_TTL_S, issue_approval
from nexus_control.access.keyring import KeyPurpose
from nexus_control.api.deps import ApproverDep, PlaneDep
from nexus_control.api.models import ToolApprovalIssued
from nexus_control.store import outbox
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["MAX_APPROVAL_BYTES", "ToolApprovalRequest", "approve_tool_call", "router"]

MAX_APPROVAL_BYTES = 64 * 1024

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])

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
    response_model=ToolApprovalIssued,
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
    request: Request, plane: PlaneDep, principal: ApproverDep
) -> ToolApprovalIssued:
    """Issue a short-lived token approving one high-risk tool call with exactly these arguments."""
    ask = parse_body(ToolApprovalRequest, await read_body(request, MAX_APPROVAL_BYTES))

    def issue() -> ToolApprovalIssued:
        config = plane.rollouts.config_in_force()
        if ask.tenant not in config["tenants"]:
            raise ApiError(422, "unknown_tenant", f"unknown tenant {ask.tenant!r}")
        tool = config["tools"].get(ask.tool)
        if tool is None:
            raise ApiError(422, "unknown_tool", f"unknown tool {ask.tool!r}")
        if not tool["approval_required"]:
            raise ApiError(422, "approval_not_needed", f"tool {ask.tool!r} needs no approval")
        approval = issue_approval(
            plane.keyring.signer(KeyPurpose.APPROVAL)[0],
            tenant=ask.tenant,
            tool=ask.tool,
            arguments=ask.arguments,
            approver=principal.name,
            subject=ask.subject,
            ttl_s=ask.ttl_seconds,
        )
        expires = datetime.fromtimestamp(approval.expires_at, UTC)
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
                expires_at=expires.isoformat(),
                reason=ask.reason,
            )
        return ToolApprovalIssued(
            token=approval.token,
            token_id=approval.token_id,
            args_sha256=approval.args_sha256,
            expires_at=expires,
        )

    return await asyncio.to_thread(issue)
