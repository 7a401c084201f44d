"""Spend anomalies on hold: a tenant's ``onAnomaly`` action, from finding to release.

When the spend-anomaly watch records a new finding for a tenant whose budget names an
``onAnomaly`` action, the tenant's anomaly is held (one hold per tenant; a later finding
while held changes nothing) and the state bundle lists it (``anomaly_holds``), where the
policy lowers the tenant's soft cap and refuses its chats on models above the stated price.
Nothing but an approver's release, with a reason, ends a hold: the point is that a person
looks before the tenant spends on as before. Both ends are audit events
(``spend.anomaly_held``, ``spend.anomaly_released``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.authoring.config import OnAnomalyConfig
from nexus_control.store import outbox
from nexus_control.store.tables import AnomalyHold

__all__ = [
    "HELD",
    "MAX_RELEASE_REASON",
    "RELEASED",
    "HeldEntry",
    "NoHoldError",
    "hold",
    "holds_state",
    "release",
]

HELD = "spend.anomaly_held"
RELEASED = "spend.anomaly_released"
MAX_RELEASE_REASON = 300


class HeldEntry(TypedDict):
    """``data.nexus_state.anomaly_holds[tenant]``: the finding the hold came from."""

    day: str
    kind: str
    since: str


class NoHoldError(NexusError):
    """Release of a tenant whose anomaly is not held."""


def hold(
    session: Session, *, tenant: str, day: str, kind: str, action: OnAnomalyConfig, actor: str
) -> bool:
    """Hold ``tenant``'s anomaly (in the caller's transaction); False if already held."""
    if session.get(AnomalyHold, tenant) is not None:
        return False
    session.add(AnomalyHold(tenant=tenant, day=day, kind=kind, since=datetime.now(UTC)))
    outbox.record(session, HELD, actor, tenant=tenant, day=day, kind=kind, action=dict(action))
    return True


def release(session: Session, *, tenant: str, actor: str, reason: str) -> AnomalyHold:
    """End ``tenant``'s hold in ``actor``'s name; the hold released.

    Raises `NoHoldError` when there is none.
    """
    row = session.get(AnomalyHold, tenant)
    if row is None:
        raise NoHoldError(f"tenant {tenant!r} has no spend anomaly on hold")
    session.delete(row)
    outbox.record(
        session,
        RELEASED,
        actor,
        tenant=tenant,
        day=row.day,
        kind=row.kind,
        held_since=row.since.astimezone(UTC).isoformat(),
        reason=reason[:MAX_RELEASE_REASON],
    )
    return row


def holds_state(session: Session) -> dict[str, HeldEntry]:
    """Every open hold, as the state bundle lists it."""
    return {
        row.tenant: {
            "day": row.day,
            "kind": row.kind,
            "since": row.since.astimezone(UTC).isoformat(),
        }
        for row in session.scalars(select(AnomalyHold).order_by(AnomalyHold.tenant))
    }
