"""The fleet: every enforcer, what it holds and runs, and its errors; operators declare
enforcers (besides the fleet file's) and remove them."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from nexus_control.api.deps import FleetReaderDep, OperatorDep, PlaneDep
from nexus_control.api.models import (
    EnforcerList,
    EnforcerRegistrationRequest,
    RegisteredEnforcer,
    RemovedEnforcer,
)
from nexus_runtime.http import ApiError

__all__ = ["get_fleet", "register_enforcer", "remove_enforcer", "router"]

router = APIRouter(prefix="/v1/fleet", tags=["fleet"])

EnforcerId = Annotated[str, Path(max_length=128, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
RegionFilter = Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")]


@router.get("", response_model=EnforcerList)
async def get_fleet(
    plane: PlaneDep, _: FleetReaderDep, region: RegionFilter = None
) -> EnforcerList:
    """Enforcers (optionally of one region) with held and active revisions per bundle."""
    views = await asyncio.to_thread(plane.serving.enforcers, region)
    return EnforcerList.model_validate({"enforcers": views})


@router.post("", status_code=200, response_model=RegisteredEnforcer)
async def register_enforcer(
    body: EnforcerRegistrationRequest, plane: PlaneDep, principal: OperatorDep
) -> RegisteredEnforcer:
    """Declare an enforcer in a region (audited): only declared enforcers are heard."""
    changed = await asyncio.to_thread(
        plane.serving.register_enforcer, body.id, body.region, principal.name
    )
    return RegisteredEnforcer(id=body.id, region=body.region, changed=changed)


@router.delete("/{enforcer_id}", status_code=200, response_model=RemovedEnforcer)
async def remove_enforcer(
    enforcer_id: EnforcerId, plane: PlaneDep, principal: OperatorDep
) -> RemovedEnforcer:
    """Take an enforcer out of the fleet: it is refused and expected by no rollout until an
    operator registers it again."""
    removed = await asyncio.to_thread(plane.serving.remove_enforcer, enforcer_id, principal.name)
    if not removed:
        raise ApiError(404, "not_found", f"no enforcer {enforcer_id} in the fleet")
    return RemovedEnforcer(removed=enforcer_id)
