"""The durable outbox: every change is recorded in the same transaction as the change.

A separate drainer moves events into the audit log (the audit service's
``append_events``); until it has, they wait here, so no change is lost to a
crash between the change and its record. An event that fails validation (an
over-long actor, a payload that is not JSON) cannot ever be appended: it is
moved to the audit log's dead-letter table (with a leaf saying so, and the
``nexus_audit_dead_letters`` counter to alert on) and the drain goes on, so
one bad event never holds up the ones behind it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nexus_audit.events import ControlEvent
from nexus_audit.service import AuditLog
from nexus_contract.canonical import CanonicalJsonError
from nexus_control.store.tables import OutboxEvent
from nexus_runtime.database import Database

__all__ = ["DRAIN_BATCH", "count_pending", "drain", "events", "pending", "record"]

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


def count_pending(db: Database) -> int:
    """Events not yet delivered to the audit log (an index range: cheap at any outbox size)."""
    with db.session() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.delivered_at.is_(None))
        )
    return int(count or 0)


def events(session: Session, event_type: str | None = None) -> list[OutboxEvent]:
    query = select(OutboxEvent).order_by(OutboxEvent.id)
    if event_type is not None:
        query = query.where(OutboxEvent.event_type == event_type)
    return list(session.scalars(query))


def drain(db: Database, audit: AuditLog) -> int:
    """Append pending events to the audit log; returns how many left the outbox.

    Idempotent on the outbox id (the log ignores an event it already has), so
    a crash between appending and marking delivered loses nothing and doubles
    nothing. Events that fail validation are dead-lettered, not retried.
    """
    with db.session() as session:
        waiting = pending(session)
        if not waiting:
            return 0
        valid: list[ControlEvent] = []
        for event in waiting:
            try:
                valid.append(
                    ControlEvent(
                        id=event.id,
                        type=event.event_type,
                        actor=event.actor,
                        created_at=event.created_at,
                        payload=event.payload,
                    )
                )
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                    for error in exc.errors()
                )
                audit.dead_letter(event.id, _record_of(event), problems)
        try:
            audit.append_events(valid)
        except (CanonicalJsonError, ValueError):
            # One event's payload cannot be made canonical: set each aside on its own.
            for candidate in valid:
                try:
                    audit.append_events([candidate])
                except (CanonicalJsonError, ValueError) as single:
                    row = next(e for e in waiting if e.id == candidate.id)
                    audit.dead_letter(candidate.id, _record_of(row), str(single))
        delivered = datetime.now(UTC)
        for event in waiting:
            event.delivered_at = delivered
        return len(waiting)


def _record_of(event: OutboxEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_type": event.event_type,
        "actor": event.actor,
        "created_at": event.created_at.isoformat() if event.created_at else None,
        "payload": event.payload,
    }
