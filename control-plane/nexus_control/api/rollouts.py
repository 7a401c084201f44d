"""Rollouts: status per region, history, and the operator's and approver's actions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from nexus_control import rollout
from nexus_control.api.deps import control_plane, require
from nexus_control.api.errors import ApiError
from nexus_control.rollout import RolloutError
from nexus_control.service import ControlPlane, rollout_view
from nexus_control.tokens import Principal, Role

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])
readers = require(Role.OPERATOR, Role.APPROVER, Role.AUTHOR, Role.COMPLIANCE)
operators = require(Role.OPERATOR)
approvers = require(Role.APPROVER)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=1000)


async def _act(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(call)
    except RolloutError as exc:
        codes = {404: "not_found", 403: "forbidden", 409: "conflict"}
        raise ApiError(exc.status, codes.get(exc.status, "conflict"), str(exc)) from None


def _status(plane: ControlPlane) -> dict[str, Any]:
    with plane.db.session() as session:
        regions = rollout.region_states(session, plane.fleet, [r.id for r in plane.fleet.regions])
        active = rollout.latest_active(session)
        recent = rollout.recent(session, 1)
        current = active or (recent[0] if recent else None)
        return {
            "rollout": rollout_view(current) if current else None,
            "regions": [
                {
                    "region": s.region,
                    "wave": s.wave,
                    "desired": s.desired,
                    "last_good": s.last_good,
                    "convergence": s.convergence,
                    "enforcers": [
                        {
                            "id": e.id,
                            "state": e.state,
                            "active_revision": e.active_revision,
                            "held_revision": e.held_revision,
                            "error": e.error,
                            "last_seen_at": e.last_seen_at.isoformat() if e.last_seen_at else None,
                        }
                        for e in s.enforcers
                    ],
                }
                for s in regions
            ],
        }


@router.get("/status")
async def rollout_status(
    request: Request, principal: Principal = Depends(readers)
) -> dict[str, Any]:
    """The current rollout and, per region and enforcer, what runs where."""
    plane = control_plane(request)
    return await asyncio.to_thread(_status, plane)


@router.get("")
async def list_rollouts(
    request: Request, principal: Principal = Depends(readers)
) -> dict[str, Any]:
    """Recent rollouts, newest first."""
    plane = control_plane(request)

    def read() -> list[dict[str, Any]]:
        with plane.db.session() as session:
            return [rollout_view(r) for r in rollout.recent(session)]

    return {"rollouts": await asyncio.to_thread(read)}


@router.get("/{rollout_id}")
async def get_rollout(
    rollout_id: int, request: Request, principal: Principal = Depends(readers)
) -> dict[str, Any]:
    """One rollout with its full history (who, when, why) and its semantic diff."""
    plane = control_plane(request)

    def read() -> dict[str, Any]:
        with plane.db.session() as session:
            row = rollout.get(session, rollout_id)
            events = rollout.history(session, rollout_id)
            return {
                **rollout_view(row),
                "diff": row.diff,
                "history": [
                    {
                        "at": e.at.isoformat(),
                        "actor": e.actor,
                        "action": e.action,
                        "region": e.region,
                        "detail": e.detail,
                    }
                    for e in events
                ],
            }

    return await _act(read)


@router.post("/{rollout_id}/approve")
async def approve(
    rollout_id: int,
    body: ApprovalRequest,
    request: Request,
    principal: Principal = Depends(approvers),
) -> dict[str, Any]:
    """Approve a publication waiting for a second person (never its author)."""
    plane = control_plane(request)
    return await _act(lambda: plane.approve(rollout_id, principal.name, body.comment))


@router.post("/{rollout_id}/promote")
async def promote(
    rollout_id: int, body: Promotion, request: Request, principal: Principal = Depends(operators)
) -> dict[str, Any]:
    """Move to the next wave now, skipping the soak."""
    plane = control_plane(request)
    return await _act(lambda: plane.promote(rollout_id, principal.name, force=body.force))


@router.post("/{rollout_id}/pause")
async def pause(
    rollout_id: int, body: Reason, request: Request, principal: Principal = Depends(operators)
) -> dict[str, Any]:
    """Stop the rollout where it is (errors still roll regions back)."""
    plane = control_plane(request)
    return await _act(lambda: plane.pause(rollout_id, principal.name, body.reason))


@router.post("/{rollout_id}/resume")
async def resume(
    rollout_id: int, request: Request, principal: Principal = Depends(operators)
) -> dict[str, Any]:
    """Let a paused rollout continue."""
    plane = control_plane(request)
    return await _act(lambda: plane.resume(rollout_id, principal.name))


@router.post("/{rollout_id}/rollback")
async def rollback(
    rollout_id: int, body: Reason, request: Request, principal: Principal = Depends(operators)
) -> dict[str, Any]:
    """Put every region this rollout reached back on its last good revision."""
    plane = control_plane(request)
    return await _act(lambda: plane.rollback(rollout_id, principal.name, body.reason))
