"""The durable outbox: every change is recorded in the same transaction as the change.

A separate drainer moves events into the audit log (the audit service's
``append_events``); until it has, they wait here, so no change is lost to a
crash between the change and its record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.events import ControlEvent
from nexus_audit.service import AuditLog
from nexus_control.store.tables import OutboxEvent
from nexus_runtime.database import Database

__all__ = ["DRAIN_BATCH", "drain", "events", "pending", "record"]

DRAIN_BATCH = 500


def record(session: Session, event_type: str, actor: str, **payload: Any) -> OutboxEvent:
    """Add an audit event to the caller's transaction."""
    event = OutboxEvent(
        event_type=event_type,
        actor=actor,
        payload=payload,
        created_at=datetime.now(UTC),
    )
    session.add(event)
    return event


def pending(session: Session, limit: int = DRAIN_BATCH) -> list[OutboxEvent]:
    return list(
        session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.delivered_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
    )


def events(session: Session, event_type: str | None = None) -> list[OutboxEvent]:
    query = select(OutboxEvent).order_by(OutboxEvent.id)
    if event_type is not None:
        query = query.where(OutboxEvent.event_type == event_type)
    return list(session.scalars(query))


def drain(db: Database, audit: AuditLog) -> int:
    """Append pending events to the audit log; returns how many.

    Idempotent on the outbox id (the log ignores an event it already has), so
    a crash between appending and marking delivered loses nothing and doubles
    nothing.
    """
    with db.session() as session:
        waiting = pending(session)
        if not waiting:
            return 0
        audit.append_events(
            ControlEvent(
                id=event.id,
                type=event.event_type,
                actor=event.actor,
                created_at=event.created_at,
                payload=event.payload,
            )
            for event in waiting
        )
        delivered = datetime.now(UTC)
        for event in waiting:
            event.delivered_at = delivered
        return len(waiting)
