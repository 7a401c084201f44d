"""Shadow targets: the published revision each region's enforcers evaluate in shadow.

A shadow candidate is never in force: the enforcers' ext_authz plugin
downloads it (signed, verified like any bundle), holds it in a store of its
own, and evaluates a sample of the Checks it already answered against it,
counting what would change (``nexus_shadow_decisions_total``). It is kept as
a `RegionTarget` row of bundle `SHADOW_BUNDLE`, so the registry counts its
revision as in force (its signature is renewed with the others) and no new
table is needed. Every assignment and removal is an outbox event.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_contract.wire import POLICY_BUNDLE, SHADOW_BUNDLE
from nexus_control.store import outbox
from nexus_control.store.tables import BundleRevision, RegionTarget

__all__ = [
    "ShadowError",
    "ShadowTarget",
    "UnknownShadowError",
    "assign_shadow",
    "clear_shadow",
    "shadow_targets",
]


class ShadowError(NexusError):
    """A shadow assignment that cannot be made: unknown region or revision, unsigned, in force."""


class UnknownShadowError(NexusError):
    """The region has no shadow candidate to remove."""


@dataclass(frozen=True)
class ShadowTarget:
    region: str
    revision: str
    active_revision: str | None
    since: datetime


def _target(session: Session, row: RegionTarget) -> ShadowTarget:
    active = session.get(RegionTarget, (row.region, POLICY_BUNDLE))
    return ShadowTarget(
        region=row.region,
        revision=row.desired_revision,
        active_revision=active.desired_revision if active else None,
        since=row.updated_at,
    )


def assign_shadow(
    session: Session,
    regions: Collection[str],
    region: str,
    revision: str,
    actor: str,
    reason: str | None,
) -> ShadowTarget:
    """Put ``revision`` in shadow in ``region`` (replacing the region's previous candidate).

    Refused, with nothing recorded, for a region outside ``regions`` (the fleet's),
    a revision not in the registry or not signed yet (an enforcer would refuse it:
    approve it first), or the revision the region already runs.
    """
    if region not in regions:
        raise ShadowError(f"unknown region {region!r}; known: {', '.join(sorted(regions))}")
    row = session.get(BundleRevision, revision)
    if row is None:
        raise ShadowError(f"revision {revision} is not in the registry (publish it first)")
    if row.archive is None:
        raise ShadowError(
            f"revision {revision[:12]} is not signed yet: approve it first "
            "(enforcers evaluate only a verified candidate)"
        )
    active = session.get(RegionTarget, (region, POLICY_BUNDLE))
    if active is not None and active.desired_revision == revision:
        raise ShadowError(f"revision {revision[:12]} is already in force in region {region}")
    target = session.get(RegionTarget, (region, SHADOW_BUNDLE))
    previous = target.desired_revision if target else None
    now = datetime.now(UTC)
    if target is None:
        target = RegionTarget(
            region=region, bundle=SHADOW_BUNDLE, desired_revision=revision, updated_at=now
        )
        session.add(target)
    else:
        target.desired_revision, target.updated_at = revision, now
    outbox.record(
        session,
        "rollout.shadowed",
        actor,
        region=region,
        revision=revision,
        previous=previous,
        active=active.desired_revision if active else None,
        reason=reason,
    )
    session.flush()
    return _target(session, target)


def clear_shadow(session: Session, region: str, actor: str, reason: str | None) -> str:
    """End the shadow in ``region``; the revision that was in shadow."""
    target = session.get(RegionTarget, (region, SHADOW_BUNDLE))
    if target is None:
        raise UnknownShadowError(f"region {region!r} has no shadow candidate")
    revision = target.desired_revision
    session.delete(target)
    outbox.record(
        session, "rollout.shadow_ended", actor, region=region, revision=revision, reason=reason
    )
    return revision


def shadow_targets(session: Session) -> list[ShadowTarget]:
    """Every region's shadow candidate, by region."""
    rows = session.scalars(
        select(RegionTarget)
        .where(RegionTarget.bundle == SHADOW_BUNDLE)
        .order_by(RegionTarget.region)
    )
    return [_target(session, row) for row in rows]
