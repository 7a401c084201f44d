"""The fleet view: every enforcer, what it holds and runs, and its errors."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from nexus_control import fleet, outbox
from nexus_control.api.deps import control_plane, require
from nexus_control.api.errors import ApiError
from nexus_control.tokens import Principal, Role

fleet_readers = require(Role.OPERATOR, Role.APPROVER, Role.AUTHOR)
operators = require(Role.OPERATOR)

router = APIRouter(prefix="/v1/fleet", tags=["fleet"])


@router.get("")
async def get_fleet(
    request: Request,
    region: str | None = None,
    principal: Principal = Depends(fleet_readers),
) -> dict[str, Any]:
    """Enforcers (optionally of one region) with held and active revisions per bundle."""
    plane = control_plane(request)

    def read() -> list[dict[str, Any]]:
        with plane.db.session() as session:
            return [fleet.as_json(view) for view in fleet.fleet(session, region)]

    return {"enforcers": await asyncio.to_thread(read)}


@router.delete("/{enforcer_id}", status_code=200)
async def remove_enforcer(
    enforcer_id: str, request: Request, principal: Principal = Depends(operators)
) -> dict[str, Any]:
    """Take an enforcer out of the fleet: it no longer blocks rollouts (until it polls again)."""
    plane = control_plane(request)

    def remove() -> bool:
        with plane.db.session() as session:
            removed = fleet.remove_enforcer(session, enforcer_id)
            if removed:
                outbox.record(session, "enforcer.removed", principal.name, enforcer=enforcer_id)
            return removed

    if not await asyncio.to_thread(remove):
        raise ApiError(404, "not_found", f"no enforcer {enforcer_id} in the fleet")
    return {"removed": enforcer_id}
