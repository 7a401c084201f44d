"""What every enforcer holds and runs, from its bundle polls and its status reports.

Two sources, kept apart on purpose: a poll's ``If-None-Match`` says which
revision an enforcer *holds*; OPA's status report says which revision it
*activated*, and any activation error. Convergence is proven per enforcer from
status reports, never assumed from a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.store.tables import Enforcer, EnforcerBundle

__all__ = [
    "BundleStatus",
    "BundleView",
    "EnforcerView",
    "StatusError",
    "StatusReport",
    "enforcer_views",
    "record_poll",
    "record_status",
    "remove_enforcer",
    "touch",
]


class StatusError(NexusError):
    """A status report that cannot be accepted (wrong enforcer, say)."""


class _Open(BaseModel):
    """OPA adds fields across versions; unknown ones are kept, known ones are typed."""

    model_config = ConfigDict(extra="allow")


class BundleStatusError(_Open):
    code: str | None = None
    message: str | None = None


class BundleStatus(_Open):
    name: str | None = None
    active_revision: str | None = Field(default=None, max_length=256)
    last_successful_activation: datetime | None = None
    last_successful_download: datetime | None = None
    code: str | None = Field(default=None, max_length=256)
    message: str | None = Field(default=None, max_length=10_000)
    errors: list[BundleStatusError] = Field(default_factory=list, max_length=1000)


class StatusReport(_Open):
    """The body OPA's status plugin POSTs."""

    labels: dict[str, str]
    bundles: dict[str, BundleStatus] = Field(default_factory=dict)


@dataclass(frozen=True)
class BundleView:
    bundle: str
    held_revision: str | None
    active_revision: str | None
    activated_at: datetime | None
    error: str | None
    error_at: datetime | None


@dataclass(frozen=True)
class EnforcerView:
    id: str
    region: str
    last_seen_at: datetime
    bundles: dict[str, BundleView]


def _insert_ignoring_conflict(session: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT unless the row exists: an enforcer's concurrent polls race to create it."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(table).values(**values).on_conflict_do_nothing())


def _touch(session: Session, enforcer_id: str, region: str, now: datetime) -> Enforcer:
    _insert_ignoring_conflict(
        session,
        Enforcer.__table__,
        {"id": enforcer_id, "region": region, "first_seen_at": now, "last_seen_at": now},
    )
    row = session.get(Enforcer, enforcer_id, populate_existing=True)
    assert row is not None
    row.last_seen_at = now
    row.region = region
    row.removed_at = None
    return row


def _bundle_row(session: Session, enforcer_id: str, bundle: str) -> EnforcerBundle:
    _insert_ignoring_conflict(
        session, EnforcerBundle.__table__, {"enforcer_id": enforcer_id, "bundle": bundle}
    )
    row = session.get(EnforcerBundle, (enforcer_id, bundle), populate_existing=True)
    assert row is not None
    return row


def record_poll(
    session: Session, enforcer_id: str, region: str, bundle: str, held: str | None
) -> bool:
    """An enforcer polled ``bundle`` holding ``held`` (its If-None-Match).

    Returns whether its last status report for the bundle carried an error.
    """
    now = datetime.now(UTC)
    _touch(session, enforcer_id, region, now)
    row = _bundle_row(session, enforcer_id, bundle)
    if row.held_revision != held:
        row.held_revision = held
        row.held_at = now
    return row.error_code is not None


def touch(session: Session, enforcer_id: str, region: str) -> None:
    """The enforcer is alive (its held long poll just ended)."""
    _touch(session, enforcer_id, region, datetime.now(UTC))


def record_status(session: Session, enforcer_id: str, region: str, report: StatusReport) -> None:
    """Store what OPA reports it activated, and any activation error, per bundle."""
    label = report.labels.get("enforcer")
    if label is not None and label != enforcer_id:
        raise StatusError(f"status labels name enforcer {label!r}, the request {enforcer_id!r}")
    now = datetime.now(UTC)
    _touch(session, enforcer_id, region, now)
    for name, status in report.bundles.items():
        row = _bundle_row(session, enforcer_id, name)
        row.status_at = now
        if status.active_revision:
            row.active_revision = status.active_revision
        if status.last_successful_activation is not None:
            row.activated_at = status.last_successful_activation
        if status.last_successful_download is not None:
            row.downloaded_at = status.last_successful_download
        if status.code:
            details = "; ".join(e.message for e in status.errors if e.message)
            row.error_code = status.code
            row.error_message = (status.message or "") + (f": {details}" if details else "")
            row.error_at = now
        else:
            row.error_code = None
            row.error_message = None


def enforcer_views(session: Session, region: str | None = None) -> list[EnforcerView]:
    query = select(Enforcer).where(Enforcer.removed_at.is_(None)).order_by(Enforcer.id)
    if region is not None:
        query = query.where(Enforcer.region == region)
    enforcers = list(session.scalars(query))
    bundles: dict[str, dict[str, BundleView]] = {e.id: {} for e in enforcers}
    if enforcers:
        for row in session.scalars(
            select(EnforcerBundle).where(EnforcerBundle.enforcer_id.in_(list(bundles)))
        ):
            error = f"{row.error_code}: {row.error_message}" if row.error_code else None
            bundles[row.enforcer_id][row.bundle] = BundleView(
                row.bundle,
                row.held_revision,
                row.active_revision,
                row.activated_at,
                error,
                row.error_at,
            )
    return [EnforcerView(e.id, e.region, e.last_seen_at, bundles[e.id]) for e in enforcers]


def remove_enforcer(session: Session, enforcer_id: str) -> bool:
    row = session.get(Enforcer, enforcer_id)
    if row is None or row.removed_at is not None:
        return False
    row.removed_at = datetime.now(UTC)
    return True
