"""The fleet view: every enforcer, what it holds and runs, and its errors."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from nexus_control import fleet
from nexus_control.api.deps import control_plane, require
from nexus_control.tokens import Principal, Role

fleet_readers = require(Role.OPERATOR, Role.APPROVER, Role.AUTHOR)

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
