"""The rollout engine: a revision moves wave by wave, confirmed by every enforcer.

States: ``pending_approval`` → ``rolling`` ⇄ ``paused`` → ``completed``; or
``halted`` (an activation error, or live enforcers that missed the activation
deadline: the affected regions are rolled back to their last good revision
automatically), ``rolled_back`` (by an operator) and ``superseded`` (a newer
publication took over).

Invariants:
- a wave's regions get the revision only when every enforcer of the previous
  wave reported it active and error-free for the soak period;
- convergence is proven per enforcer from OPA's status reports, never assumed;
  an enforcer that is down blocks promotion (it is no failure) until it
  returns or an operator removes it;
- every step is a :class:`RolloutEvent` and an outbox event in the same
  transaction as the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_control import outbox
from nexus_control.regions import Fleet
from nexus_control.registry import POLICY_BUNDLE
from nexus_control.tables import (
    Approval,
    BundleRevision,
    Enforcer,
    EnforcerBundle,
    RegionTarget,
    Rollout,
    RolloutEvent,
)

ENGINE = "rollout-engine"
ACTIVE_STATES = ("pending_approval", "rolling", "paused")


class RolloutError(Exception):
    """A rollout request that cannot be carried out; nothing was changed."""

    status = 409


class RolloutNotFoundError(RolloutError):
    status = 404


class ApprovalForbiddenError(RolloutError):
    status = 403


@dataclass(frozen=True)
class EnforcerState:
    id: str
    state: str
    """``active``, ``pending``, ``failed`` or ``down``."""
    active_revision: str | None
    held_revision: str | None
    error: str | None
    last_seen_at: datetime | None


@dataclass(frozen=True)
class RegionState:
    region: str
    wave: int
    desired: str | None
    last_good: str | None
    enforcers: tuple[EnforcerState, ...] = field(default_factory=tuple)

    @property
    def converged(self) -> bool:
        return bool(self.enforcers) and all(e.state == "active" for e in self.enforcers)

    @property
    def convergence(self) -> float:
        if not self.enforcers:
            return 0.0
        return sum(e.state == "active" for e in self.enforcers) / len(self.enforcers)

    @property
    def failed(self) -> list[EnforcerState]:
        return [e for e in self.enforcers if e.state == "failed"]


def _now() -> datetime:
    return datetime.now(UTC)


def _event(
    session: Session,
    rollout: Rollout,
    actor: str,
    action: str,
    *,
    region: str | None = None,
    detail: str | None = None,
) -> None:
    at = _now()
    session.add(
        RolloutEvent(
            rollout_id=rollout.id, at=at, actor=actor, action=action, region=region, detail=detail
        )
    )
    outbox.record(
        session,
        f"rollout.{action}",
        actor,
        rollout=rollout.id,
        revision=rollout.revision,
        region=region,
        detail=detail,
    )


def _assign(session: Session, region: str, revision: str) -> None:
    row = session.get(RegionTarget, (region, POLICY_BUNDLE))
    if row is None:
        session.add(
            RegionTarget(
                region=region,
                bundle=POLICY_BUNDLE,
                desired_revision=revision,
                last_good_revision=None,
                updated_at=_now(),
            )
        )
    elif row.desired_revision != revision:
        row.desired_revision = revision
        row.updated_at = _now()


def current_base(session: Session, fleet: Fleet) -> str | None:
    """The revision the canary wave runs as good now (what a new publication is diffed against)."""
    for region in fleet.wave(fleet.waves[0]):
        row = session.get(RegionTarget, (region.id, POLICY_BUNDLE))
        if row is not None:
            return row.last_good_revision or row.desired_revision
    return None


def get(session: Session, rollout_id: int) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise RolloutNotFoundError(f"no rollout {rollout_id}")
    return rollout


def start(
    session: Session,
    fleet: Fleet,
    revision: str,
    *,
    author: str,
    diff: dict[str, Any],
    needs_approval: bool,
) -> tuple[Rollout, list[str]]:
    """Open a rollout for ``revision``; returns it and the regions whose target changed."""
    if session.get(BundleRevision, revision) is None:
        raise RolloutNotFoundError(f"no revision {revision}")
    changed: list[str] = []
    for active in session.scalars(select(Rollout).where(Rollout.state.in_(ACTIVE_STATES))):
        active.state = "superseded"
        active.updated_at = _now()
        _event(session, active, author, "superseded", detail=f"by revision {revision}")
    now = _now()
    rollout = Rollout(
        bundle=POLICY_BUNDLE,
        revision=revision,
        base_revision=current_base(session, fleet),
        state="pending_approval" if needs_approval else "rolling",
        wave=fleet.waves[0],
        wave_started_at=None,
        wave_converged_at=None,
        needs_approval=needs_approval,
        diff=diff,
        created_by=author,
        created_at=now,
        updated_at=now,
        reason=None,
    )
    session.add(rollout)
    session.flush()
    _event(
        session,
        rollout,
        author,
        "created",
        detail="waiting for a second approver" if needs_approval else None,
    )
    if not needs_approval:
        changed += _start_wave(session, fleet, rollout, rollout.wave, ENGINE)
    return rollout, changed


def _start_wave(
    session: Session, fleet: Fleet, rollout: Rollout, wave: int, actor: str
) -> list[str]:
    rollout.wave = wave
    rollout.wave_started_at = _now()
    rollout.wave_converged_at = None
    rollout.updated_at = _now()
    regions = [r.id for r in fleet.wave(wave)]
    for region in regions:
        _assign(session, region, rollout.revision)
        _event(session, rollout, actor, "wave_started", region=region, detail=f"wave {wave}")
    return regions


def approve(
    session: Session, fleet: Fleet, rollout_id: int, *, approver: str, comment: str | None = None
) -> tuple[Rollout, list[str]]:
    rollout = get(session, rollout_id)
    if rollout.state != "pending_approval":
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}, not waiting for approval")
    if approver == rollout.created_by:
        raise ApprovalForbiddenError(
            "the author of a change cannot approve it; a second person must"
        )
    session.add(Approval(rollout_id=rollout.id, approver=approver, comment=comment, at=_now()))
    rollout.state = "rolling"
    _event(session, rollout, approver, "approved", detail=comment)
    return rollout, _start_wave(session, fleet, rollout, rollout.wave, approver)


def pause(session: Session, rollout_id: int, *, actor: str, reason: str | None) -> Rollout:
    rollout = get(session, rollout_id)
    if rollout.state != "rolling":
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; only a rolling one pauses")
    rollout.state = "paused"
    rollout.updated_at = _now()
    _event(session, rollout, actor, "paused", detail=reason)
    return rollout


def resume(session: Session, rollout_id: int, *, actor: str) -> Rollout:
    rollout = get(session, rollout_id)
    if rollout.state != "paused":
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; only a paused one resumes")
    rollout.state = "rolling"
    rollout.updated_at = _now()
    _event(session, rollout, actor, "resumed")
    return rollout


def promote(
    session: Session, fleet: Fleet, rollout_id: int, *, actor: str, force: bool = False
) -> tuple[Rollout, list[str]]:
    """Move to the next wave now, skipping the soak (and, with ``force``, convergence)."""
    rollout = get(session, rollout_id)
    if rollout.state not in ("rolling", "paused"):
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; nothing to promote")
    states = region_states(
        session, fleet, [r.id for r in fleet.wave(rollout.wave)], rollout.revision
    )
    failed = [e.id for s in states for e in s.failed]
    if failed:
        raise RolloutError(f"enforcers {', '.join(failed)} failed to activate; roll back instead")
    if not force and not all(s.converged for s in states):
        waiting = [e.id for s in states for e in s.enforcers if e.state != "active"]
        raise RolloutError(
            f"wave {rollout.wave} has not converged "
            f"(waiting for {', '.join(waiting) or 'enforcers'}); use --force to promote anyway"
        )
    return rollout, _advance(session, fleet, rollout, actor)


def _advance(session: Session, fleet: Fleet, rollout: Rollout, actor: str) -> list[str]:
    for region in fleet.wave(rollout.wave):
        row = session.get(RegionTarget, (region.id, POLICY_BUNDLE))
        if row is not None and row.desired_revision == rollout.revision:
            row.last_good_revision = rollout.revision
    later = [w for w in fleet.waves if w > rollout.wave]
    _event(session, rollout, actor, "wave_completed", detail=f"wave {rollout.wave}")
    if not later:
        rollout.state = "completed"
        rollout.updated_at = _now()
        _event(session, rollout, actor, "completed")
        return []
    if rollout.state == "paused":
        rollout.state = "rolling"
    return _start_wave(session, fleet, rollout, later[0], actor)


def rollback(
    session: Session, fleet: Fleet, rollout_id: int, *, actor: str, reason: str | None
) -> tuple[Rollout, list[str]]:
    """Put every region this rollout reached back on its last good revision."""
    rollout = get(session, rollout_id)
    if rollout.state in ("rolled_back", "superseded"):
        raise RolloutError(f"rollout {rollout_id} is already {rollout.state}")
    plan = _rollback_plan(session, rollout)
    if not plan:
        raise RolloutError(
            f"nothing to roll back: revision {rollout.revision[:12]} runs in no region now"
        )
    if any(target is None for target in plan.values()):
        stranded = [region for region, target in plan.items() if target is None]
        raise RolloutError(
            f"regions {', '.join(stranded)} have no earlier good revision to roll back to"
        )
    changed = _apply_rollback(session, rollout, plan, actor, reason or "rolled back by operator")
    rollout.state = "rolled_back"
    return rollout, changed


def _rollback_plan(session: Session, rollout: Rollout) -> dict[str, str | None]:
    plan: dict[str, str | None] = {}
    rows = session.scalars(
        select(RegionTarget).where(
            RegionTarget.bundle == POLICY_BUNDLE,
            RegionTarget.desired_revision == rollout.revision,
        )
    )
    for row in rows:
        target = row.last_good_revision
        if target == rollout.revision:
            target = rollout.base_revision
        plan[row.region] = target
    return plan


def _apply_rollback(
    session: Session, rollout: Rollout, plan: dict[str, str | None], actor: str, reason: str
) -> list[str]:
    changed = []
    for region, target in sorted(plan.items()):
        if target is None:
            continue
        row = session.get(RegionTarget, (region, POLICY_BUNDLE))
        assert row is not None
        row.desired_revision = target
        if row.last_good_revision == rollout.revision:
            row.last_good_revision = target
        row.updated_at = _now()
        changed.append(region)
        _event(
            session, rollout, actor, "rolled_back", region=region, detail=f"to {target}: {reason}"
        )
    rollout.reason = reason
    rollout.updated_at = _now()
    return changed


def region_states(
    session: Session, fleet: Fleet, regions: list[str], revision: str | None = None
) -> list[RegionState]:
    """Per region: what it should run and what each of its enforcers reports."""
    now = _now()
    stale = timedelta(seconds=fleet.stale_after_s)
    out = []
    for region_id in regions:
        config = fleet.region(region_id)
        target = session.get(RegionTarget, (region_id, POLICY_BUNDLE))
        desired = target.desired_revision if target else None
        want = revision or desired
        known = list(session.scalars(select(Enforcer).where(Enforcer.region == region_id)))
        seen = {e.id: e for e in known if e.removed_at is None}
        removed = {e.id for e in known if e.removed_at is not None}
        listed = list(config.enforcers) if config and config.enforcers else sorted(seen)
        # An operator's removal stands until the enforcer shows up again.
        expected = [enforcer_id for enforcer_id in listed if enforcer_id not in removed]
        enforcers = []
        for enforcer_id in expected:
            enforcer = seen.get(enforcer_id)
            row = session.get(EnforcerBundle, (enforcer_id, POLICY_BUNDLE)) if enforcer else None
            state = _enforcer_state(enforcer, row, want, target, now, stale)
            error = f"{row.error_code}: {row.error_message}" if row and row.error_code else None
            enforcers.append(
                EnforcerState(
                    enforcer_id,
                    state,
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
            )
        )
    return out


def _enforcer_state(
    enforcer: Enforcer | None,
    row: EnforcerBundle | None,
    want: str | None,
    target: RegionTarget | None,
    now: datetime,
    stale: timedelta,
) -> str:
    if enforcer is None or now - enforcer.last_seen_at > stale:
        return "down"
    if row is None or want is None:
        return "pending"
    if row.active_revision == want and not row.error_code:
        return "active"
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
        return "failed"
    return "pending"


def tick(session: Session, fleet: Fleet) -> list[str]:
    """One step of the engine over every rolling or paused rollout; returns changed regions."""
    changed: list[str] = []
    for rollout in session.scalars(select(Rollout).where(Rollout.state.in_(("rolling", "paused")))):
        changed += _step(session, fleet, rollout)
    return changed


def _step(session: Session, fleet: Fleet, rollout: Rollout) -> list[str]:
    now = _now()
    reached = [r.id for r in fleet.regions if r.wave <= rollout.wave]
    states = region_states(session, fleet, reached, rollout.revision)
    failed = [(s.region, e) for s in states for e in s.failed]
    if failed:
        detail = "; ".join(f"{e.id} in {region}: {e.error}" for region, e in failed)
        return _halt(session, rollout, f"activation failed: {detail}")
    if rollout.state == "paused" or rollout.wave_started_at is None:
        return []
    current = [s for s in states if s.wave == rollout.wave]
    if not all(s.converged for s in current):
        live_pending = [e.id for s in current for e in s.enforcers if e.state == "pending"]
        deadline = rollout.wave_started_at + timedelta(seconds=fleet.activation_deadline_s)
        if live_pending and now > deadline:
            return _halt(
                session,
                rollout,
                f"deadline missed: {', '.join(live_pending)} did not activate within "
                f"{fleet.activation_deadline_s} s",
            )
        return []
    if rollout.wave_converged_at is None:
        rollout.wave_converged_at = now
        _event(session, rollout, ENGINE, "wave_converged", detail=f"wave {rollout.wave}")
    if now - rollout.wave_converged_at < timedelta(seconds=fleet.soak_s):
        return []
    return _advance(session, fleet, rollout, ENGINE)


def _halt(session: Session, rollout: Rollout, reason: str) -> list[str]:
    rollout.state = "halted"
    _event(session, rollout, ENGINE, "halted", detail=reason)
    plan = _rollback_plan(session, rollout)
    stranded = [region for region, target in plan.items() if target is None]
    for region in stranded:
        _event(
            session,
            rollout,
            ENGINE,
            "rollback_impossible",
            region=region,
            detail="no earlier good revision; the region keeps what it runs",
        )
    return _apply_rollback(session, rollout, plan, ENGINE, reason)


def history(session: Session, rollout_id: int) -> list[RolloutEvent]:
    get(session, rollout_id)
    return list(
        session.scalars(
            select(RolloutEvent)
            .where(RolloutEvent.rollout_id == rollout_id)
            .order_by(RolloutEvent.id)
        )
    )


def recent(session: Session, limit: int = 20) -> list[Rollout]:
    return list(session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit)))


def latest_active(session: Session) -> Rollout | None:
    return session.scalar(
        select(Rollout).where(Rollout.state.in_(ACTIVE_STATES)).order_by(Rollout.id.desc()).limit(1)
    )
