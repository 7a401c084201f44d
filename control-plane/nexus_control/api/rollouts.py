"""Rollouts: status per region, history, and the operator's and approver's actions."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from nexus_control.api.deps import ApproverDep, OperatorDep, PlaneDep, ReaderDep
from nexus_control.api.models import (
    ApprovalRequest,
    DiffPageView,
    GateOverride,
    Promotion,
    Reason,
    RolloutDetail,
    RolloutList,
    RolloutStatusView,
    RolloutView,
)
from nexus_control.api.replays import gate_of
from nexus_control.rollout.changes import parse_query

__all__ = [
    "MAX_ROLLOUT_ID",
    "RolloutId",
    "approve",
    "get_rollout",
    "get_rollout_changes",
    "list_rollouts",
    "override",
    "pause",
    "promote",
    "resume",
    "rollback",
    "rollout_status",
    "router",
]

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

MAX_ROLLOUT_ID = 2**31 - 1
"""Rollout ids are 32-bit integer keys (PostgreSQL's ``integer``); a larger id is a 400, not
a database error."""
RolloutId = Annotated[int, Path(ge=1, le=MAX_ROLLOUT_ID)]
PageField = Annotated[str | None, Query(max_length=40)]
"""A page field as text: `parse_query` says what is wrong with it (400), as the console's."""


@router.get("/status", response_model=RolloutStatusView)
async def rollout_status(plane: PlaneDep, _: ReaderDep) -> RolloutStatusView:
    """The current rollout and, per region and enforcer, what runs where."""
    return RolloutStatusView.model_validate(await asyncio.to_thread(plane.rollouts.status))


@router.get("", response_model=RolloutList)
async def list_rollouts(plane: PlaneDep, _: ReaderDep) -> RolloutList:
    """Recent rollouts, newest first."""
    rollouts = await asyncio.to_thread(lambda: plane.rollouts.recent(diff=False))
    return RolloutList.model_validate({"rollouts": rollouts})


@router.get("/{rollout_id}", response_model=RolloutDetail)
async def get_rollout(rollout_id: RolloutId, plane: PlaneDep, _: ReaderDep) -> RolloutDetail:
    """One rollout with its full history (who, when, why) and its whole semantic diff.

    A first publication's diff lists every tenant, grant and key (megabytes for a
    big fleet): ``GET /v1/rollouts/{id}/changes`` serves it a page at a time.
    """
    row, history = await asyncio.to_thread(plane.rollouts.get, rollout_id)
    view = RolloutView.model_validate(row).model_dump()
    return RolloutDetail.model_validate({**view, "diff": row.diff, "history": history})


@router.get("/{rollout_id}/changes", response_model=DiffPageView)
async def get_rollout_changes(
    rollout_id: RolloutId,
    plane: PlaneDep,
    _: ReaderDep,
    effect: PageField = None,
    after: PageField = None,
    before: PageField = None,
    limit: PageField = None,
) -> DiffPageView:
    """One page of the rollout's semantic diff, widening changes first, with its summary.

    ``effect`` keeps one effect's changes; ``after`` / ``before`` are the
    ``next_after`` / ``previous_before`` cursors of the page before. Unlike
    ``GET /v1/rollouts/{id}`` (the whole diff, kept as it was), its size is
    bounded by ``limit`` (at most 500).
    """
    query = parse_query(effect, after, before, limit)
    page = await asyncio.to_thread(plane.rollouts.diff_page, rollout_id, query)
    return DiffPageView.of_page(page)


@router.post("/{rollout_id}/approve", response_model=RolloutView)
async def approve(
    request: Request,
    rollout_id: RolloutId,
    body: ApprovalRequest,
    plane: PlaneDep,
    principal: ApproverDep,
) -> RolloutView:
    """Approve a publication waiting for a second person (never its author).

    With replay gates declared, the answer comes after the gate's verdict.
    """
    gate = gate_of(request, plane)
    row = await asyncio.to_thread(
        lambda: plane.rollouts.approve(
            rollout_id,
            principal.name,
            body.comment,
            approver_id=principal.principal_id,
            gate=gate,
        )
    )
    return RolloutView.model_validate(row)


@router.post("/{rollout_id}/override", response_model=RolloutView)
async def override(
    rollout_id: RolloutId, body: GateOverride, plane: PlaneDep, principal: ApproverDep
) -> RolloutView:
    """Release a rollout a failing replay gate holds, for a recorded reason (never its author)."""
    row = await asyncio.to_thread(
        lambda: plane.rollouts.override(
            rollout_id, principal.name, body.reason, approver_id=principal.principal_id
        )
    )
    return RolloutView.model_validate(row)


@router.post("/{rollout_id}/promote", response_model=RolloutView)
async def promote(
    rollout_id: RolloutId, body: Promotion, plane: PlaneDep, principal: OperatorDep
) -> RolloutView:
    """Move to the next wave now, skipping the soak."""
    row = await asyncio.to_thread(
        lambda: plane.rollouts.promote(rollout_id, principal.name, force=body.force)
    )
    return RolloutView.model_validate(row)


@router.post("/{rollout_id}/pause", response_model=RolloutView)
async def pause(
    rollout_id: RolloutId, body: Reason, plane: PlaneDep, principal: OperatorDep
) -> RolloutView:
    """Stop the rollout where it is (errors still roll regions back)."""
    row = await asyncio.to_thread(plane.rollouts.pause, rollout_id, principal.name, body.reason)
    return RolloutView.model_validate(row)


@router.post("/{rollout_id}/resume", response_model=RolloutView)
async def resume(rollout_id: RolloutId, plane: PlaneDep, principal: OperatorDep) -> RolloutView:
    """Let a paused rollout continue."""
    row = await asyncio.to_thread(plane.rollouts.resume, rollout_id, principal.name)
    return RolloutView.model_validate(row)


@router.post("/{rollout_id}/rollback", response_model=RolloutView)
async def rollback(
    rollout_id: RolloutId, body: Reason, plane: PlaneDep, principal: OperatorDep
) -> RolloutView:
    """Put every region this rollout reached back on its last good revision."""
    row = await asyncio.to_thread(plane.rollouts.rollback, rollout_id, principal.name, body.reason)
    return RolloutView.model_validate(row)
