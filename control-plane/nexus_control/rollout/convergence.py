"""Convergence: what each expected enforcer of a region reports about a revision.

Read from two sources kept apart on purpose (`nexus_control.serving.enforcers`):
what an enforcer *holds* (its polls) and what it *activated* (OPA's status
reports). Only the second proves convergence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.rollout.fleet import Fleet
from nexus_control.rollout.states import EnforcerState, EnforcerStatus, RegionState
from nexus_control.store.tables import (
    Enforcer,
    EnforcerBundle,
    EnforcerRegistration,
    RegionTarget,
)

__all__ = ["SIGNATURE_REFUSALS", "convergence_lag_s", "region_states"]


def region_states(
    session: Session, fleet: Fleet, regions: list[str], revision: str | None = None
) -> list[RegionState]:
    """Per region: what it should run and what each of its expected enforcers reports.

    ``revision`` is what the enforcers should be running (a rollout's revision);
    by default, each region's desired revision.
    """
    now = datetime.now(UTC)
    stale = timedelta(seconds=fleet.stale_after_s)
    out = []
    for region_id in regions:
        config = fleet.region(region_id)
        target = session.get(RegionTarget, (region_id, POLICY_BUNDLE))
        desired = target.desired_revision if target else None
        want = revision or desired
        known = list(session.scalars(select(Enforcer).where(Enforcer.region == region_id)))
        seen = {e.id: e for e in known if e.removed_at is None}
        removed = set(session.scalars(select(Enforcer.id).where(Enforcer.removed_at.is_not(None))))
        registrations = {r.id: r.region for r in session.scalars(select(EnforcerRegistration))}
        listed = {
            e
            for e in (config.enforcers if config else [])
            if registrations.get(e, region_id) == region_id
        } | {e for e, r in registrations.items() if r == region_id}
        # Only declared enforcers are expected; an operator's removal stands until the
        # enforcer is registered again.
        expected = sorted(listed - removed)
        enforcers = []
        for enforcer_id in expected:
            enforcer = seen.get(enforcer_id)
            row = session.get(EnforcerBundle, (enforcer_id, POLICY_BUNDLE)) if enforcer else None
            error = f"{row.error_code}: {row.error_message}" if row and row.error_code else None
            enforcers.append(
                EnforcerStatus(
                    enforcer_id,
                    _enforcer_state(enforcer, row, want, target, now, stale),
                    row.active_revision if row else None,
                    row.held_revision if row else None,
                    error,
                    enforcer.last_seen_at if enforcer else None,
                )
            )
        out.append(
            RegionState(
                region_id,
                config.wave if config else -1,
                desired,
                target.last_good_revision if target else None,
                tuple(enforcers),
                target.updated_at if target else None,
            )
        )
    return out


def convergence_lag_s(region: RegionState, now: datetime, stale_after_s: float) -> float:
    """Seconds the region has had a desired revision not every expected enforcer runs.

    0 when every expected enforcer reports it active (or the region has no desired
    revision, or expects no enforcer). Otherwise the time since the earliest moment an
    enforcer stopped counting as converged: the revision's assignment for one that never
    ran it, and for one that ran it and then went down, when it was last seen plus the
    fleet's staleness (so an enforcer lost hours after a rollout does not look hours late).
    """
    if region.desired is None or region.assigned_at is None:
        return 0.0
    since: list[datetime] = []
    stale = timedelta(seconds=stale_after_s)
    for enforcer in region.enforcers:
        if enforcer.state is EnforcerState.ACTIVE:
            continue
        lagging_since = region.assigned_at
        ran_it = enforcer.active_revision == region.desired and enforcer.error is None
        if enforcer.state is EnforcerState.DOWN and ran_it and enforcer.last_seen_at is not None:
            lagging_since = max(lagging_since, enforcer.last_seen_at + stale)
        since.append(lagging_since)
    if not since:
        return 0.0
    return max(0.0, (now - min(since)).total_seconds())


def _enforcer_state(
    enforcer: Enforcer | None,
    row: EnforcerBundle | None,
    want: str | None,
    target: RegionTarget | None,
    now: datetime,
    stale: timedelta,
) -> EnforcerState:
    if enforcer is None or now - enforcer.last_seen_at > stale:
        return EnforcerState.DOWN
    if row is None or want is None:
        return EnforcerState.PENDING
    if row.active_revision == want and not row.error_code:
        return EnforcerState.ACTIVE
    # Only an error after a download of the assigned revision is an activation
    # failure; a failed request (404 before any assignment, a network error)
    # is an enforcer still trying, which the deadline covers.
    assigned_at = target.updated_at if target else None
    downloaded_after = (
        row.downloaded_at is not None
        and assigned_at is not None
        and row.downloaded_at >= assigned_at
    )
    if row.error_code and downloaded_after and row.active_revision != want:
        return EnforcerState.FAILED
    # OPA refusing the bundle's signature (an unknown key, a bad digest) is
    # reported as a failed load with no new download time; it downloaded the
    # bundle and will refuse it again, so it is a failure, not a retry.
    refused_after = (
        row.error_at is not None and assigned_at is not None and row.error_at >= assigned_at
    )
    if refused_after and row.active_revision != want and _signature_refused(row.error_message):
        return EnforcerState.FAILED
    return EnforcerState.PENDING


SIGNATURE_REFUSALS = (
    "verification key",
    "failed to verify",
    "digest mismatch",
    "not included in bundle signature",
    "missing .signatures.json",
)
"""Words of OPA's own bundle-verification errors: the bundle was downloaded and refused."""


def _signature_refused(message: str | None) -> bool:
    text = (message or "").lower()
    return any(marker in text for marker in SIGNATURE_REFUSALS)
