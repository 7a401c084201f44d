"""What every enforcer holds and runs, from its bundle polls and its status reports.

Two sources, kept apart on purpose: a poll's ``If-None-Match`` says which
revision an enforcer *holds*; OPA's status report says which revision it
*activated*, and any activation error. Convergence is proven per enforcer from
status reports, never assumed from a download.

Only declared enforcers are heard: those the fleet file lists for a region,
and those an operator registered. A poll or report from any other id is
refused and adds nothing; an operator's removal stands until the enforcer is
registered again; a report never moves an enforcer to another region. Times
an enforcer reports are checked against the control plane's clock: ahead of
it by more than `MAX_REPORTED_AHEAD`, the report is refused; older than
`MAX_REPORTED_AGE`, the time is clamped to that bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.store import outbox
from nexus_control.store.tables import Enforcer, EnforcerBundle, EnforcerRegistration

__all__ = [
    "MAX_REPORTED_AGE",
    "MAX_REPORTED_AHEAD",
    "BundleStatus",
    "BundleView",
    "EnforcerRefusedError",
    "EnforcerView",
    "RegistrationError",
    "StatusError",
    "StatusReport",
    "admit",
    "declared_in_region",
    "enforcer_views",
    "record_poll",
    "record_status",
    "register_enforcer",
    "remove_enforcer",
    "touch",
]

MAX_REPORTED_AHEAD = timedelta(seconds=60)
"""A reported time further ahead of the control plane's clock is refused (clock skew)."""
MAX_REPORTED_AGE = timedelta(days=30)
"""A reported time further behind is clamped to this bound (it can never move a rollout)."""


class StatusError(NexusError):
    """A status report that cannot be accepted (a time ahead of the clock, say)."""


class EnforcerRefusedError(NexusError):
    """The enforcer may not speak here: undeclared, removed, or declared in another region."""


class RegistrationError(NexusError):
    """An enforcer cannot be registered as asked (declared in another region by the fleet)."""


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


def _declared_region(session: Session, declared: Mapping[str, str], enforcer_id: str) -> str | None:
    registration = session.get(EnforcerRegistration, enforcer_id)
    if registration is not None:
        return registration.region
    return declared.get(enforcer_id)


def admit(session: Session, declared: Mapping[str, str], enforcer_id: str, region: str) -> None:
    """Raise `EnforcerRefusedError` unless ``enforcer_id`` is declared, in ``region``, and
    not removed. ``declared``: the fleet file's enforcer ids and their regions."""
    where = _declared_region(session, declared, enforcer_id)
    if where is None:
        raise EnforcerRefusedError(
            f"enforcer {enforcer_id!r} is not declared: list it in the fleet file or "
            "register it (POST /v1/fleet)"
        )
    if where != region:
        raise EnforcerRefusedError(
            f"enforcer {enforcer_id!r} is declared in region {where!r}, not {region!r}"
        )
    row = session.get(Enforcer, enforcer_id)
    if row is not None and row.removed_at is not None:
        raise EnforcerRefusedError(
            f"enforcer {enforcer_id!r} was removed from the fleet at "
            f"{row.removed_at.isoformat()}; an operator must register it again"
        )


def _touch(session: Session, enforcer_id: str, region: str, now: datetime) -> Enforcer:
    # Callers admitted the enforcer first: its region is the declared one, and a
    # report never rewrites it.
    _insert_ignoring_conflict(
        session,
        Enforcer.__table__,
        {"id": enforcer_id, "region": region, "first_seen_at": now, "last_seen_at": now},
    )
    row = session.get(Enforcer, enforcer_id, populate_existing=True)
    assert row is not None
    row.last_seen_at = now
    return row


def _reported(when: datetime | None, now: datetime, field: str) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now + MAX_REPORTED_AHEAD:
        raise StatusError(
            f"{field} {when.isoformat()} is ahead of the control plane's clock "
            f"({now.isoformat()}) by more than {int(MAX_REPORTED_AHEAD.total_seconds())} s"
        )
    return max(when, now - MAX_REPORTED_AGE)


def _bundle_row(session: Session, enforcer_id: str, bundle: str) -> EnforcerBundle:
    _insert_ignoring_conflict(
        session, EnforcerBundle.__table__, {"enforcer_id": enforcer_id, "bundle": bundle}
    )
    row = session.get(EnforcerBundle, (enforcer_id, bundle), populate_existing=True)
    assert row is not None
    return row


def record_poll(
    session: Session,
    declared: Mapping[str, str],
    enforcer_id: str,
    region: str,
    bundle: str,
    held: str | None,
) -> bool:
    """An enforcer polled ``bundle`` holding ``held`` (its If-None-Match).

    Returns whether its last status report for the bundle carried an error.
    """
    admit(session, declared, enforcer_id, region)
    now = datetime.now(UTC)
    _touch(session, enforcer_id, region, now)
    row = _bundle_row(session, enforcer_id, bundle)
    if row.held_revision != held:
        row.held_revision = held
        row.held_at = now
    return row.error_code is not None


def touch(session: Session, declared: Mapping[str, str], enforcer_id: str, region: str) -> None:
    """The enforcer is alive (its held long poll just ended), unless removed meanwhile."""
    admit(session, declared, enforcer_id, region)
    _touch(session, enforcer_id, region, datetime.now(UTC))


def record_status(
    session: Session,
    declared: Mapping[str, str],
    enforcer_id: str,
    region: str,
    report: StatusReport,
) -> None:
    """Store what OPA reports it activated, and any activation error, per bundle."""
    label = report.labels.get("enforcer")
    if label is not None and label != enforcer_id:
        raise EnforcerRefusedError(
            f"status labels name enforcer {label!r}, but the credential is {enforcer_id!r}'s"
        )
    label_region = report.labels.get("region")
    if label_region is not None and label_region != region:
        raise EnforcerRefusedError(
            f"status labels name region {label_region!r}, but the credential is for {region!r}"
        )
    admit(session, declared, enforcer_id, region)
    now = datetime.now(UTC)
    times = {
        name: (
            _reported(status.last_successful_activation, now, "last_successful_activation"),
            _reported(status.last_successful_download, now, "last_successful_download"),
        )
        for name, status in report.bundles.items()
    }
    _touch(session, enforcer_id, region, now)
    for name, status in report.bundles.items():
        row = _bundle_row(session, enforcer_id, name)
        row.status_at = now
        activated, downloaded = times[name]
        if status.active_revision:
            row.active_revision = status.active_revision
        if activated is not None:
            row.activated_at = activated
        if downloaded is not None:
            row.downloaded_at = downloaded
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


def declared_in_region(session: Session, declared: Mapping[str, str], region: str) -> set[str]:
    """Every enforcer declared in ``region`` (fleet file or registration), removed or not."""
    listed = {e for e, r in declared.items() if r == region}
    moved = set(
        session.scalars(
            select(EnforcerRegistration.id).where(EnforcerRegistration.region != region)
        )
    )
    registered = set(
        session.scalars(
            select(EnforcerRegistration.id).where(EnforcerRegistration.region == region)
        )
    )
    return (listed - moved) | registered


def register_enforcer(
    session: Session, declared: Mapping[str, str], enforcer_id: str, region: str, actor: str
) -> bool:
    """Declare ``enforcer_id`` in ``region`` (again, after a removal); audited.

    Returns False if it was already declared there and not removed.
    """
    listed = declared.get(enforcer_id)
    if listed is not None and listed != region:
        raise RegistrationError(
            f"the fleet file declares enforcer {enforcer_id!r} in region {listed!r}"
        )
    now = datetime.now(UTC)
    registration = session.get(EnforcerRegistration, enforcer_id)
    seen = session.get(Enforcer, enforcer_id)
    removed = seen is not None and seen.removed_at is not None
    moved = registration is not None and registration.region != region
    if registration is not None and not moved and not removed:
        return False
    if registration is None:
        session.add(
            EnforcerRegistration(
                id=enforcer_id, region=region, registered_at=now, registered_by=actor
            )
        )
    else:
        registration.region = region
        registration.registered_at = now
        registration.registered_by = actor
    if seen is not None:
        seen.removed_at = None
        seen.region = region
    outbox.record(session, "enforcer.registered", actor, enforcer=enforcer_id, region=region)
    return True


def remove_enforcer(session: Session, declared: Mapping[str, str], enforcer_id: str) -> bool:
    """Take ``enforcer_id`` out of the fleet until it is registered again; False if it is
    not in it."""
    now = datetime.now(UTC)
    registration = session.get(EnforcerRegistration, enforcer_id)
    region = registration.region if registration is not None else declared.get(enforcer_id)
    row = session.get(Enforcer, enforcer_id)
    if region is None or (row is not None and row.removed_at is not None):
        return False
    if row is None:
        # Declared but never seen: the removal itself must still be remembered.
        row = Enforcer(
            id=enforcer_id, region=region, first_seen_at=now, last_seen_at=now, removed_at=now
        )
        session.add(row)
    row.removed_at = now
    return True
