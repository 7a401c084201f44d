"""Tool-invocation approvals: a human approver signs off one high-risk tool call; the
gateway reports the call that spent it, so that no enforcer honours it twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nexus_control.access import approval_uses
from nexus_control.access.approvals import MAX_SUBJECT_CHARS, MAX_TTL_S, issue_approval
from nexus_control.access.keyring import KeyPurpose
from nexus_control.api.deps import ApproverDep, GatewayDep, PlaneDep
from nexus_control.api.models import ApprovalUseRecorded, ToolApprovalIssued
from nexus_control.authoring.spec import DEFAULT_APPROVAL_TTL_S, RiskLevel
from nexus_control.store import outbox
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = [
    "MAX_APPROVAL_BYTES",
    "MAX_USE_BYTES",
    "ApprovalUseReport",
    "ToolApprovalRequest",
    "approve_tool_call",
    "report_approval_use",
    "router",
]

MAX_APPROVAL_BYTES = 64 * 1024
MAX_USE_BYTES = 4 * 1024

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])

_Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")]


class ToolApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: _Id
    tool: _Id
    arguments: dict[str, Any]
    subject: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_SUBJECT_CHARS, pattern=r"^\S+$")
    ]
    """The one caller the approval is for, as the policy knows it (``apikey:acme-agent``,
    ``service:support-agent``, ``user:alice@acme.example``)."""
    ttl_seconds: Annotated[int, Field(ge=1, le=MAX_TTL_S)] | None = None
    """At most the policy's cap for the tool's risk level; default min(300 s, cap)."""
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class ApprovalUseReport(BaseModel):
    """``POST /v1/approvals/used``: the gateway spent this approval on one call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approval_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """The ``x-nexus-approval-id`` the enforcer added to the call (the approval's jti)."""
    tenant: _Id
    decision_id: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
        ]
        | None
    ) = None
    """The call's ``x-nexus-decision-id``, linking the use to its decision log entry."""


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
        risk = RiskLevel(tool["risk"])
        caps = config["approval"].get("max_ttl_s", {})
        approval = issue_approval(
            plane.keyring.signer(KeyPurpose.APPROVAL)[0],
            tenant=ask.tenant,
            tool=ask.tool,
            arguments=ask.arguments,
            approver=principal.name,
            subject=ask.subject,
            max_ttl_s=caps.get(risk.value, DEFAULT_APPROVAL_TTL_S[risk]),
            risk=risk.value,
            ttl_s=ask.ttl_seconds,
        )
        expires = datetime.fromtimestamp(approval.expires_at, UTC)
        with plane.db.session() as session:
            approval_uses.record_issued(session, approval)
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


@router.post(
    "/used",
    status_code=202,
    response_model=ApprovalUseRecorded,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ApprovalUseReport"}}
            },
        }
    },
)
async def report_approval_use(
    request: Request, plane: PlaneDep, principal: GatewayDep
) -> ApprovalUseRecorded:
    """The gateway spent an approval on one call: refuse it on every enforcer from now on.

    The gateway reports before it runs the tool and runs nothing when the
    report fails. The first report marks the approval used and republishes
    the state bundle; a later one is audited as a reuse.
    """
    report = parse_body(ApprovalUseReport, await read_body(request, MAX_USE_BYTES), "invalid_use")
    use = await asyncio.to_thread(
        plane.budgets.record_approval_use,
        approval_id=report.approval_id,
        tenant=report.tenant,
        reporter=principal.name,
        decision_id=report.decision_id,
    )
    return ApprovalUseRecorded(
        approval_id=use.approval_id,
        tenant=use.tenant,
        tool=use.tool,
        first_use=use.first_use,
        used_at=use.used_at,
        expires_at=use.expires_at,
    )
