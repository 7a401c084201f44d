"""The change record: every publication, approval, rollout step, rollback and token issued."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from nexus_control import outbox
from nexus_control.api.deps import control_plane, require
from nexus_control.tokens import Principal, Role

router = APIRouter(prefix="/v1/events", tags=["audit"])
readers = require(Role.COMPLIANCE, Role.OPERATOR)


@router.get("")
async def list_events(
    request: Request,
    event_type: str | None = None,
    principal: Principal = Depends(readers),
) -> dict[str, Any]:
    """Control-plane events in order, with whether each has reached the audit log."""
    plane = control_plane(request)

    def read() -> list[dict[str, Any]]:
        with plane.db.session() as session:
            return [
                {
                    "id": e.id,
                    "type": e.event_type,
                    "actor": e.actor,
                    "payload": e.payload,
                    "created_at": e.created_at.isoformat(),
                    "delivered_at": e.delivered_at.isoformat() if e.delivered_at else None,
                }
                for e in outbox.events(session, event_type)
            ]

    return {"events": await asyncio.to_thread(read)}
