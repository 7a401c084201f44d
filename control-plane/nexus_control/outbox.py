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

from nexus_control.tables import OutboxEvent


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


def pending(session: Session, limit: int = 500) -> list[OutboxEvent]:
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
