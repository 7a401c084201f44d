"""The change record: every publication, approval, rollout step, rollback and token issued."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from nexus_control.api.deps import EventReaderDep, PlaneDep
from nexus_control.api.models import ControlEventList
from nexus_control.store import outbox
from nexus_control.store.tables import OutboxEvent

__all__ = ["list_events", "router"]

router = APIRouter(prefix="/v1/events", tags=["audit"])


@router.get("", response_model=ControlEventList)
async def list_events(
    plane: PlaneDep, _: EventReaderDep, event_type: str | None = None
) -> ControlEventList:
    """Control-plane events in order, with whether each has reached the audit log."""

    def read() -> list[OutboxEvent]:
        with plane.db.session() as session:
            return outbox.events(session, event_type)

    return ControlEventList.model_validate({"events": await asyncio.to_thread(read)})
