"""The rollout engine: a revision moves wave by wave, confirmed by every enforcer.

The states are in `nexus_control.rollout.states`. An activation error, or live
enforcers that missed the activation deadline, halt a rollout and put the
affected regions back on their last good revision automatically.

Invariants:
- a wave's regions get the revision only when every enforcer of the previous
  wave reported it active and error-free for the soak period;
- convergence is proven per enforcer from OPA's status reports, never assumed;
  an enforcer that is down blocks promotion (it is no failure) until it
  returns or an operator removes it;
- every step is a :class:`RolloutEvent` and an outbox event in the same
  transaction as the change;
- with replay gates, no wave starts before the gate's verdict passed or an
  approver (never the author, by principal) overrode a failing one;
- with a wave gate (`nexus_control.rollout.shadowgate`), no rollout enters a
  wave its gate holds, by the engine or by `promote`, unless an approver
  (never the author) overrode it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer, undefer
from sqlalchemy.orm.interfaces import LoaderOption

from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.rollout import changes, shadowgate
from nexus_control.rollout.convergence import region_states
from nexus_control.rollout.errors import RolloutError, RolloutNotFoundError
from nexus_control.rollout.fleet import Fleet
from nexus_control.rollout.shadowgate import WaveGate
from nexus_control.rollout.states import ACTIVE_STATES, EnforcerState, RolloutAction, RolloutState
from nexus_control.store import outbox
from nexus_control.store.tables import Approval, BundleRevision, RegionTarget, Rollout, RolloutEvent
from nexus_runtime.tracing import tracer

__all__ = [
    "ENGINE",
    "GATE_PENDING",
    "ApprovalForbiddenError",
    "OverrideReasonError",
    "RolloutError",
    "RolloutNotFoundError",
    "approve",
    "current_base",
    "gate_judged",
    "get",
    "history",
    "latest_active",
    "override",
    "pause",
    "promote",
    "recent",
    "resume",
    "rollback",
    "start",
    "tick",
]

ENGINE = "rollout-engine"
"""The actor of the steps the engine takes by itself."""
GATE_PENDING = "replay gate running"
"""The reason of a rollout held while its replay gate runs (no verdict yet)."""


class ApprovalForbiddenError(RolloutError):
    """The caller may not approve this rollout (its author, say)."""


class OverrideReasonError(RolloutError):
    """An override without a reason: the reason is the evidence, so none is no override."""


_tracer = tracer(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _event(
    session: Session,
    rollout: Rollout,
    actor: str,
    action: RolloutAction,
    *,
    region: str | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        RolloutEvent(
            rollout_id=rollout.id,
            at=_now(),
            actor=actor,
            action=action.value,
            region=region,
            detail=detail,
        )
    )
    outbox.record(
        session,
        f"rollout.{action.value}",
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


def get(session: Session, rollout_id: int, *, diff: bool = False) -> Rollout:
    """Rollout ``rollout_id``, its ``diff`` loaded with it only when asked for (else read on
    access, in the session: the engine's steps never need it)."""
    rollout = session.get(Rollout, rollout_id, options=(undefer(Rollout.diff),) if diff else ())
    if rollout is None:
        raise RolloutNotFoundError(f"no rollout {rollout_id}")
    return rollout


def start(
    session: Session,
    fleet: Fleet,
    revision: str,
    *,
    author: str,
    author_id: str,
    diff: dict[str, Any],
    needs_approval: bool,
    gated: bool = False,
) -> tuple[Rollout, list[str]]:
    """Open a rollout for ``revision``; returns it and the regions whose target changed.

    ``gated``: replay gates are declared, so a rollout that needs no approval
    is held (no wave) until `gate_judged`; one that needs approval is gated
    when approved.
    """
    if session.get(BundleRevision, revision) is None:
        raise RolloutNotFoundError(f"no revision {revision}")
    changed: list[str] = []
    for active in session.scalars(select(Rollout).where(Rollout.state.in_(ACTIVE_STATES))):
        active.state = RolloutState.SUPERSEDED
        active.updated_at = _now()
        _event(session, active, author, RolloutAction.SUPERSEDED, detail=f"by revision {revision}")
    now = _now()
    rollout = Rollout(
        bundle=POLICY_BUNDLE,
        revision=revision,
        base_revision=current_base(session, fleet),
        state=RolloutState.PENDING_APPROVAL if needs_approval else RolloutState.ROLLING,
        wave=fleet.waves[0],
        wave_started_at=None,
        wave_converged_at=None,
        needs_approval=needs_approval,
        diff=diff,
        created_by=author,
        created_by_principal=author_id,
        created_at=now,
        updated_at=now,
        reason=None,
    )
    session.add(rollout)
    session.flush()
    changes.record(session, rollout.id, diff)
    _event(
        session,
        rollout,
        author,
        RolloutAction.CREATED,
        detail="waiting for a second approver" if needs_approval else None,
    )
    if needs_approval:
        return rollout, changed
    if gated:
        _hold(session, rollout, author, GATE_PENDING)
        return rollout, changed
    changed += _start_wave(session, fleet, rollout, rollout.wave, ENGINE)
    return rollout, changed


def _hold(session: Session, rollout: Rollout, actor: str, reason: str) -> None:
    rollout.state = RolloutState.HELD
    rollout.reason = reason
    rollout.updated_at = _now()
    _event(session, rollout, actor, RolloutAction.HELD, detail=reason)


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
        _event(
            session,
            rollout,
            actor,
            RolloutAction.WAVE_STARTED,
            region=region,
            detail=f"wave {wave}",
        )
    return regions


def approve(
    session: Session,
    fleet: Fleet,
    rollout_id: int,
    *,
    approver: str,
    approver_id: str,
    comment: str | None = None,
    sign: Callable[[str], object] = lambda _: None,
    gated: bool = False,
) -> tuple[Rollout, list[str]]:
    """A second person's approval: ``sign`` signs the revision before any region gets it.

    The author is recognised by principal id, whatever name either token
    carries (a rollout from before principals existed: by its folded name).
    ``gated``: the rollout is held for its replay gate instead of starting.
    """
    rollout = get(session, rollout_id)
    if rollout.state is not RolloutState.PENDING_APPROVAL:
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}, not waiting for approval")
    if _is_author(rollout, approver, approver_id):
        raise ApprovalForbiddenError(
            "the author of a change cannot approve it, under any name; a second person must"
        )
    sign(rollout.revision)
    session.add(
        Approval(
            rollout_id=rollout.id,
            approver=approver,
            approver_principal=approver_id,
            comment=comment,
            at=_now(),
        )
    )
    rollout.state = RolloutState.ROLLING
    _event(session, rollout, approver, RolloutAction.APPROVED, detail=comment)
    if gated:
        _hold(session, rollout, approver, GATE_PENDING)
        return rollout, []
    return rollout, _start_wave(session, fleet, rollout, rollout.wave, approver)


def _is_author(rollout: Rollout, name: str, principal_id: str) -> bool:
    author_id = rollout.created_by_principal
    if author_id is not None:
        return principal_id == author_id
    return _folded(name) == _folded(rollout.created_by)


def _folded(name: str) -> str:
    return " ".join(name.split()).casefold()


def gate_judged(
    session: Session, fleet: Fleet, rollout_id: int, *, passed: bool, detail: str, actor: str
) -> tuple[Rollout, list[str]]:
    """The replay gate's verdict on a held rollout: a pass starts its first wave.

    A rollout no longer waiting for this verdict (superseded by a newer
    publication meanwhile) is left as it is; the verdict is evidence all the same.
    """
    rollout = get(session, rollout_id)
    if rollout.state is not RolloutState.HELD or rollout.reason != GATE_PENDING:
        return rollout, []
    if not passed:
        _hold(session, rollout, actor, f"replay gate failed: {detail}")
        return rollout, []
    rollout.state = RolloutState.ROLLING
    rollout.reason = None
    _event(session, rollout, actor, RolloutAction.GATE_PASSED, detail=detail)
    return rollout, _start_wave(session, fleet, rollout, rollout.wave, ENGINE)


def override(
    session: Session,
    fleet: Fleet,
    rollout_id: int,
    *,
    approver: str,
    approver_id: str,
    reason: str | None,
) -> tuple[Rollout, list[str]]:
    """An approver releases a rollout a failing replay gate holds, for a recorded reason.

    Never the change's author (by principal, like an approval). A change that
    still needs its second approver goes on waiting for that approval.
    """
    rollout = get(session, rollout_id)
    reason = " ".join((reason or "").split())
    if not reason:
        raise OverrideReasonError(
            f"rollout {rollout_id}: an override needs a reason (why the failing gate is accepted)"
        )
    if shadowgate.is_held(rollout) and rollout.state is RolloutState.ROLLING:
        _forbid_author(rollout, approver, approver_id)
        shadowgate.record_override(session, rollout, approver, approver_id, reason)
        return rollout, _advance(session, fleet, rollout, approver)
    if rollout.state is not RolloutState.HELD:
        raise RolloutError(
            f"rollout {rollout_id} is {rollout.state}; only a held one is overridden"
        )
    if rollout.reason == GATE_PENDING:
        raise RolloutError(f"rollout {rollout_id}: its replay gate is still running; wait for it")
    _forbid_author(rollout, approver, approver_id)
    outbox.record(
        session,
        "replay.gate_overridden",
        approver,
        rollout=rollout.id,
        revision=rollout.revision,
        approver_principal=approver_id,
        held_for=rollout.reason,
        reason=reason,
    )
    _event(session, rollout, approver, RolloutAction.OVERRIDDEN, detail=reason)
    rollout.reason = None
    rollout.updated_at = _now()
    approved = session.scalar(select(Approval.id).where(Approval.rollout_id == rollout.id))
    if rollout.needs_approval and approved is None:
        rollout.state = RolloutState.PENDING_APPROVAL
        return rollout, []
    rollout.state = RolloutState.ROLLING
    return rollout, _start_wave(session, fleet, rollout, rollout.wave, approver)


def _forbid_author(rollout: Rollout, approver: str, approver_id: str) -> None:
    if _is_author(rollout, approver, approver_id):
        raise ApprovalForbiddenError(
            "the author of a change cannot override its failing gate, under any name; "
            "a second person must, or publish a fix"
        )


def pause(session: Session, rollout_id: int, *, actor: str, reason: str | None) -> Rollout:
    rollout = get(session, rollout_id)
    if rollout.state is not RolloutState.ROLLING:
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; only a rolling one pauses")
    rollout.state = RolloutState.PAUSED
    rollout.updated_at = _now()
    _event(session, rollout, actor, RolloutAction.PAUSED, detail=reason)
    return rollout


def resume(session: Session, rollout_id: int, *, actor: str) -> Rollout:
    rollout = get(session, rollout_id)
    if rollout.state is not RolloutState.PAUSED:
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; only a paused one resumes")
    rollout.state = RolloutState.ROLLING
    rollout.updated_at = _now()
    _event(session, rollout, actor, RolloutAction.RESUMED)
    return rollout


def promote(
    session: Session,
    fleet: Fleet,
    rollout_id: int,
    *,
    actor: str,
    force: bool = False,
    wave_gate: WaveGate | None = None,
) -> tuple[Rollout, list[str]]:
    """Move to the next wave now, skipping the soak (and, with ``force``, convergence), but
    never past ``wave_gate``: a failing verdict is recorded and the rollout stays."""
    rollout = get(session, rollout_id)
    if rollout.state is RolloutState.HELD:
        raise RolloutError(
            f"rollout {rollout_id} is held by its replay gate ({rollout.reason}); "
            "an approver may override it, or publish a fix"
        )
    if rollout.state not in (RolloutState.ROLLING, RolloutState.PAUSED):
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}; nothing to promote")
    states = region_states(
        session, fleet, [r.id for r in fleet.wave(rollout.wave)], rollout.revision
    )
    failed = [e.id for s in states for e in s.failed]
    if failed:
        raise RolloutError(f"enforcers {', '.join(failed)} failed to activate; roll back instead")
    if not force and not all(s.converged for s in states):
        waiting = [e.id for s in states for e in s.enforcers if e.state is not EnforcerState.ACTIVE]
        raise RolloutError(
            f"wave {rollout.wave} has not converged "
            f"(waiting for {', '.join(waiting) or 'enforcers'}); use --force to promote anyway"
        )
    return rollout, _advance(session, fleet, rollout, actor, wave_gate)


def _advance(
    session: Session,
    fleet: Fleet,
    rollout: Rollout,
    actor: str,
    wave_gate: WaveGate | None = None,
) -> list[str]:
    later = [w for w in fleet.waves if w > rollout.wave]
    if later and wave_gate is not None:
        verdict = wave_gate(session, rollout, later[0])
        if verdict is not None and not shadowgate.record_verdict(session, rollout, verdict, actor):
            return []
    for region in fleet.wave(rollout.wave):
        row = session.get(RegionTarget, (region.id, POLICY_BUNDLE))
        if row is not None and row.desired_revision == rollout.revision:
            row.last_good_revision = rollout.revision
    _event(session, rollout, actor, RolloutAction.WAVE_COMPLETED, detail=f"wave {rollout.wave}")
    if not later:
        rollout.state = RolloutState.COMPLETED
        rollout.updated_at = _now()
        _event(session, rollout, actor, RolloutAction.COMPLETED)
        return []
    if rollout.state is RolloutState.PAUSED:
        rollout.state = RolloutState.ROLLING
    return _start_wave(session, fleet, rollout, later[0], actor)


def rollback(
    session: Session, fleet: Fleet, rollout_id: int, *, actor: str, reason: str | None
) -> tuple[Rollout, list[str]]:
    """Put every region this rollout reached back on its last good revision."""
    rollout = get(session, rollout_id)
    if rollout.state in (RolloutState.ROLLED_BACK, RolloutState.SUPERSEDED):
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
    rollout.state = RolloutState.ROLLED_BACK
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
            session,
            rollout,
            actor,
            RolloutAction.ROLLED_BACK,
            region=region,
            detail=f"to {target}: {reason}",
        )
    rollout.reason = reason
    rollout.updated_at = _now()
    return changed


def tick(session: Session, fleet: Fleet, wave_gate: WaveGate | None = None) -> list[str]:
    """One step of the engine over every rolling or paused rollout; returns changed regions."""
    changed: list[str] = []
    moving = select(Rollout).where(Rollout.state.in_((RolloutState.ROLLING, RolloutState.PAUSED)))
    for rollout in session.scalars(moving):
        # A span per rollout step (a no-op without tracing), so a stalled
        # wave shows up in the trace of the tick that judged it.
        with _tracer.start_as_current_span("rollout.step") as span:
            span.set_attribute("nexus.rollout", rollout.id)
            span.set_attribute("nexus.revision", rollout.revision)
            span.set_attribute("nexus.wave", rollout.wave)
            moved = _step(session, fleet, rollout, wave_gate)
            span.set_attribute("nexus.rollout_state", str(rollout.state))
            span.set_attribute("nexus.regions_changed", moved)
        changed += moved
    return changed


def _step(
    session: Session, fleet: Fleet, rollout: Rollout, wave_gate: WaveGate | None
) -> list[str]:
    now = _now()
    reached = [r.id for r in fleet.regions if r.wave <= rollout.wave]
    states = region_states(session, fleet, reached, rollout.revision)
    failed = [(s.region, e) for s in states for e in s.failed]
    if failed:
        detail = "; ".join(f"{e.id} in {region}: {e.error}" for region, e in failed)
        return _halt(session, rollout, f"activation failed: {detail}")
    if rollout.state is RolloutState.PAUSED or rollout.wave_started_at is None:
        return []
    current = [s for s in states if s.wave == rollout.wave]
    if not all(s.converged for s in current):
        live_pending = [
            e.id for s in current for e in s.enforcers if e.state is EnforcerState.PENDING
        ]
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
        _event(
            session, rollout, ENGINE, RolloutAction.WAVE_CONVERGED, detail=f"wave {rollout.wave}"
        )
    if now - rollout.wave_converged_at < timedelta(seconds=fleet.soak_s):
        return []
    return _advance(session, fleet, rollout, ENGINE, wave_gate)


def _halt(session: Session, rollout: Rollout, reason: str) -> list[str]:
    rollout.state = RolloutState.HALTED
    _event(session, rollout, ENGINE, RolloutAction.HALTED, detail=reason)
    plan = _rollback_plan(session, rollout)
    stranded = [region for region, target in plan.items() if target is None]
    for region in stranded:
        _event(
            session,
            rollout,
            ENGINE,
            RolloutAction.ROLLBACK_IMPOSSIBLE,
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


def recent(session: Session, limit: int = 20, *, diff: bool = True) -> list[Rollout]:
    """The newest ``limit`` rollouts; without their ``diff`` (megabytes for a big first
    publication; reading it then raises) when ``diff`` is False."""
    query = select(Rollout).order_by(Rollout.id.desc()).limit(limit)
    return list(session.scalars(query.options(_diff_loading(diff))))


def _diff_loading(diff: bool) -> LoaderOption:
    """Load a rollout's ``diff`` with it, or never (reading it then raises, not a hidden query)."""
    return undefer(Rollout.diff) if diff else defer(Rollout.diff, raiseload=True)


def latest_active(session: Session) -> Rollout | None:
    return session.scalar(
        select(Rollout).where(Rollout.state.in_(ACTIVE_STATES)).order_by(Rollout.id.desc()).limit(1)
    )


def claim_stale_gates(session: Session, silent_since: datetime) -> list[Rollout]:
    """Rollouts held for a replay gate that has given no verdict since ``silent_since``.

    The process that ran the gate stopped before recording a verdict (a
    restart, a crash, a replica killed), so nothing will ever release the
    rollout. Each one is claimed by a conditional update of its ``updated_at``:
    of several replicas looking at once exactly one wins, and it re-runs the
    gate. The restart is a history entry (and an audit event) like any hold.
    """
    stale = session.scalars(
        select(Rollout.id).where(
            Rollout.state == RolloutState.HELD,
            Rollout.reason == GATE_PENDING,
            Rollout.updated_at < silent_since,
        )
    ).all()
    claimed: list[Rollout] = []
    for rollout_id in stale:
        won = session.scalar(
            update(Rollout)
            .where(
                Rollout.id == rollout_id,
                Rollout.state == RolloutState.HELD,
                Rollout.reason == GATE_PENDING,
                Rollout.updated_at < silent_since,
            )
            .values(updated_at=_now())
            .returning(Rollout.id)
            .execution_options(synchronize_session=False)
        )
        if won is None:
            continue
        rollout = session.get(Rollout, rollout_id, populate_existing=True)
        if rollout is None:
            continue
        _event(
            session,
            rollout,
            ENGINE,
            RolloutAction.HELD,
            detail="replay gate restarted: the process running it gave no verdict",
        )
        claimed.append(rollout)
    return claimed
