"""Rollouts as a service: what publishing, approving and operating a rollout does.

Each action is one transaction over the engine (`nexus_control.rollout.engine`)
and wakes the long polls of every region whose target it changed. With a
``gate`` (the fleet declares replay gates), the rollout is held in one
transaction, the gate replays the signed revision outside any transaction,
and its verdict starts the first wave or keeps the rollout held in another. The engine
steps every `ROLLOUT_TICK_S`, and at once when a status report arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nexus_contract.errors import NexusError
from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.diff import PolicyDiff, diff_bundles
from nexus_control.quality import evaluations
from nexus_control.registry.registry import Registry
from nexus_control.registry.revisions import Published
from nexus_control.replay.gatekeeper import GateOutcome
from nexus_control.rollout import changes, engine, shadowgate
from nexus_control.rollout.convergence import region_states
from nexus_control.rollout.fleet import Fleet
from nexus_control.rollout.shadowgate import WaveGate, WaveVerdict
from nexus_control.rollout.states import RegionState, RolloutState
from nexus_control.serving.notifier import RevisionNotifier, bundle_key
from nexus_control.store.tables import Rollout, RolloutEvent
from nexus_runtime.database import Database

__all__ = [
    "GATE_SILENCE_S",
    "Gate",
    "NoPolicyInForceError",
    "Publication",
    "RolloutStatus",
    "Rollouts",
    "ShadowGateHeldError",
]

log = logging.getLogger("nexus.control.rollout")

ROLLOUT_TICK_S = 1.0
"""The engine steps at least this often while a rollout moves."""
TICK_POLL_S = 0.02
"""How quickly a waiting engine notices it was poked by a status report."""
GATE_SILENCE_S = 900.0
"""A replay gate with no verdict after this long is taken to have lost its process and is
re-run (`Rollouts.recover_gates`): longer than a replay of the gate window takes."""
GATE_CHECK_S = 30.0
"""How often a serving process looks for such gates."""


Gate = Callable[[str, int, str], GateOutcome]


class ShadowGateHeldError(engine.RolloutError):
    """A promotion the next wave's shadow gate holds."""


def _unbound_gate(session: object, rollout: Rollout, wave: int) -> WaveVerdict:
    return WaveVerdict(wave, False, "shadow gates need the audit log served with the plane")


"""Judges (revision, rollout id, actor) on recorded traffic and records the verdict."""


class NoPolicyInForceError(NexusError):
    """No revision runs in the canary wave yet, so no policy (and no cap) is in force."""


@dataclass(frozen=True)
class Publication:
    published: Published
    rollout: Rollout
    diff: PolicyDiff


@dataclass(frozen=True)
class RolloutStatus:
    rollout: Rollout | None
    """The active rollout, else the most recent one."""
    regions: list[RegionState]


class Rollouts:
    """Opens rollouts on publication, and runs the engine that moves them."""

    def __init__(
        self,
        db: Database,
        fleet: Fleet,
        registry: Registry,
        notifier: RevisionNotifier,
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_change`` is called whenever what a region should run may have changed."""
        self.db = db
        self.fleet = fleet
        self.registry = registry
        self.notifier = notifier
        self._on_change = on_change
        self._poked = threading.Event()
        self.wave_gate: WaveGate | None = None if fleet.shadow_gates is None else _unbound_gate
        """The shadow gate on entering each next wave (`ControlPlane.bind_audit` binds it to
        the audit log; until then, declared shadow gates hold every promotion)."""

    # -- what people do ---------------------------------------------------------

    def publish(
        self,
        sources: bytes,
        author: str,
        *,
        author_id: str,
        expected_revision: str | None = None,
        gate: Gate | None = None,
    ) -> Publication:
        """Build ``sources`` here, store the revision, open its rollout.

        ``author`` is the publisher's name (the actor in events), ``author_id``
        their principal id (what separation of duties compares).

        The whole bundle is diffed against what the canary runs (data, Rego
        modules, roots); a change that needs a second approver waits unsigned,
        any other is signed with the active bundle key at once, and, with a
        ``gate``, held until the gate's verdict. Publishing the revision the
        latest rollout already carries changes nothing.

        A prompt version or model the rollout would route traffic to, and whose spec
        declares ``quality``, needs a passing latest evaluation: otherwise
        `evaluations.QualityGateError` names each one at its place in the specs, and
        nothing is stored.
        """
        staged = self.registry.build(sources, expected_revision=expected_revision)
        with self.db.session() as session:
            evaluations.gate(session, staged.demands)
            published = self.registry.store(session, staged, sources, author)
            latest = engine.recent(session, 1)
            if not published.created and latest and latest[0].revision == published.revision:
                current = latest[0]
                return Publication(published, current, PolicyDiff.model_validate(current.diff))
            base = engine.current_base(session, self.fleet)
            old = self.registry.view_in(session, base) if base else None
            new = self.registry.view_in(session, published.revision)
            change = diff_bundles(old, new, exempt_packages=self.fleet.exempt_packages)
            needs_approval = self.fleet.second_approver == "always" or change.needs_second_approver
            if not needs_approval:
                self.registry.sign(session, published.revision, author)
            opened, changed = engine.start(
                session,
                self.fleet,
                published.revision,
                author=author,
                author_id=author_id,
                diff=change.model_dump(mode="json"),
                needs_approval=needs_approval,
                gated=gate is not None,
            )
        self._notify(changed)
        self._on_change()
        if gate is not None and not needs_approval:
            opened = self._judge(opened, gate, author)
        return Publication(published, opened, change)

    def approve(
        self,
        rollout_id: int,
        approver: str,
        comment: str | None,
        *,
        approver_id: str,
        gate: Gate | None = None,
    ) -> Rollout:
        """A second person approves: the revision is signed, then its first wave starts.

        ``approver_id`` is the approver's principal id; the author's is refused.
        The quality gate runs again on the thresholds the revision carries
        (`evaluations.QualityLapsedError` if an evaluation failed since publishing).
        With a ``gate``, the signed revision is judged before any wave starts.
        """
        with self.db.session() as session:

            def sign(revision: str) -> None:
                config = self.registry.config_in(session, revision)
                evaluations.gate_signed(session, config, revision)
                self.registry.sign(session, revision, approver)

            rollout, changed = engine.approve(
                session,
                self.fleet,
                rollout_id,
                approver=approver,
                approver_id=approver_id,
                comment=comment,
                sign=sign,
                gated=gate is not None,
            )
        self._notify(changed)
        if gate is not None:
            rollout = self._judge(rollout, gate, approver)
        return rollout

    def override(
        self, rollout_id: int, approver: str, reason: str | None, *, approver_id: str
    ) -> Rollout:
        """An approver (never the author) releases a rollout its failing replay gate holds."""
        with self.db.session() as session:
            rollout, changed = engine.override(
                session,
                self.fleet,
                rollout_id,
                approver=approver,
                approver_id=approver_id,
                reason=reason,
            )
        self._notify(changed)
        return rollout

    def _judge(self, rollout: Rollout, gate: Gate, actor: str) -> Rollout:
        outcome = gate(rollout.revision, rollout.id, actor)
        with self.db.session() as session:
            judged, changed = engine.gate_judged(
                session,
                self.fleet,
                rollout.id,
                passed=outcome.passed,
                detail=outcome.detail,
                actor=actor,
            )
        self._notify(changed)
        return judged

    def recover_gates(self, gate: Gate, *, silent_for_s: float = GATE_SILENCE_S) -> list[Rollout]:
        """Re-run every replay gate that has given no verdict for ``silent_for_s``.

        A gate runs in the request that published or approved; when that process
        dies first, the rollout would stay held with no verdict for ever. Held
        stays fail-closed meanwhile: no wave starts without a verdict.
        """
        silent_since = datetime.now(UTC) - timedelta(seconds=silent_for_s)
        with self.db.session() as session:
            claimed = engine.claim_stale_gates(session, silent_since)
        for rollout in claimed:
            log.warning("rollout %s: its replay gate gave no verdict; running it again", rollout.id)
        return [self._judge(rollout, gate, engine.ENGINE) for rollout in claimed]

    async def run_gate_recovery(self, stop: asyncio.Event, gate: Gate) -> None:
        """`recover_gates` every GATE_CHECK_S until ``stop`` (on every replica: claims are
        atomic, so one of them re-runs each gate)."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.recover_gates, gate)
            except Exception:
                log.exception("replay gate recovery failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GATE_CHECK_S)

    def promote(self, rollout_id: int, actor: str, *, force: bool) -> Rollout:
        """Promote now; `ShadowGateHeldError` (after recording the verdict) when the next
        wave's shadow gate holds it."""
        with self.db.session() as session:
            rollout, changed = engine.promote(
                session, self.fleet, rollout_id, actor=actor, force=force,
                wave_gate=self.wave_gate,
            )  # fmt: skip
            held = not changed and shadowgate.is_held(rollout)
            reason = rollout.reason
        self._notify(changed)
        if held:
            raise ShadowGateHeldError(
                f"rollout {rollout_id} stays in its wave: {reason}; an approver may override "
                "it (nexus-policy rollout override), or publish a fix"
            )
        return rollout

    def pause(self, rollout_id: int, actor: str, reason: str | None) -> Rollout:
        with self.db.session() as session:
            return engine.pause(session, rollout_id, actor=actor, reason=reason)

    def pause_rolling(self, actor: str, reason: str) -> int | None:
        """Pause the rollout in progress if it is rolling; its id, or None if none was.

        What an alert's remediation calls: a rollout already paused, held or awaiting
        approval moves no further anyway, so it is left as it is.
        """
        with self.db.session() as session:
            current = engine.latest_active(session)
            if current is None or current.state is not RolloutState.ROLLING:
                return None
            return engine.pause(session, current.id, actor=actor, reason=reason).id

    def rollback_in_progress(
        self, actor: str, reason: str, *, started_by: datetime | None = None
    ) -> tuple[Rollout | None, str]:
        """Roll back the rollout in progress (rolling or paused), as `rollback` does.

        What an alert's remediation calls. Returns the rollout (None if none was rolled back)
        and what happened: ``rolled_back``, ``no rollout in progress`` (nothing reached a
        region, or nothing moves), ``newer than the alert`` (it was opened after
        ``started_by``, the moment the alert started firing, so it cannot be what the alert
        is about: a fix published while the alert still fires is not undone), or the
        engine's reason for refusing (no earlier good revision to go back to).
        """
        with self.db.session() as session:
            current = engine.latest_active(session)
            if current is None or current.state not in (RolloutState.ROLLING, RolloutState.PAUSED):
                return None, "no rollout in progress"
            if started_by is not None and current.created_at > started_by:
                return None, "newer than the alert"
            rollout_id = current.id
        try:
            return self.rollback(rollout_id, actor, reason), "rolled_back"
        except engine.RolloutError as exc:
            return None, str(exc)

    def resume(self, rollout_id: int, actor: str) -> Rollout:
        with self.db.session() as session:
            return engine.resume(session, rollout_id, actor=actor)

    def rollback(self, rollout_id: int, actor: str, reason: str | None) -> Rollout:
        with self.db.session() as session:
            rollout, changed = engine.rollback(
                session, self.fleet, rollout_id, actor=actor, reason=reason
            )
        self._notify(changed)
        return rollout

    # -- what people read --------------------------------------------------------

    def status(self) -> RolloutStatus:
        with self.db.session() as session:
            regions = region_states(session, self.fleet, [r.id for r in self.fleet.regions])
            current = engine.latest_active(session)
            if current is None:
                recent = engine.recent(session, 1, diff=False)
                current = recent[0] if recent else None
        return RolloutStatus(current, regions)

    def recent(self, limit: int = 20, *, diff: bool = True) -> list[Rollout]:
        with self.db.session() as session:
            return engine.recent(session, limit, diff=diff)

    def get(self, rollout_id: int, *, diff: bool = True) -> tuple[Rollout, list[RolloutEvent]]:
        """A rollout and its history, oldest step first; without its whole ``diff`` (megabytes
        for a big first publication) when False: `diff_page` reads it a page at a time."""
        with self.db.session() as session:
            rollout = engine.get(session, rollout_id, diff=diff)
            return rollout, engine.history(session, rollout_id)

    def diff_page(
        self, rollout_id: int, query: changes.PageQuery | None = None
    ) -> changes.DiffPage:
        """One page of the rollout's data changes (`nexus_control.rollout.changes`)."""
        with self.db.session() as session:
            return changes.diff_page(session, rollout_id, query)

    def active_state(self) -> RolloutState | None:
        with self.db.session() as session:
            current = engine.latest_active(session)
            return current.state if current is not None else None

    def base_revision(self) -> str | None:
        """The revision the canary wave runs as good: what is in force."""
        with self.db.session() as session:
            return engine.current_base(session, self.fleet)

    def config_in_force(self) -> CompiledConfig:
        """The compiled config the canary wave runs as good.

        A publication waiting for approval (a budget raise, say) is not in force yet.
        """
        revision = self.base_revision()
        if revision is None:
            raise NoPolicyInForceError("no policy is in force yet: publish one first")
        return self.registry.config(revision)

    # -- the engine ----------------------------------------------------------------

    def tick(self) -> list[str]:
        """One step of the engine; wakes the pollers of every region it changed."""
        with self.db.session() as session:
            changed = engine.tick(session, self.fleet, self.wave_gate)
        self._notify(changed)
        return changed

    def poke(self) -> None:
        """A status report arrived: step the engine now rather than at the next tick."""
        self._poked.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Step the engine every ROLLOUT_TICK_S, and at once when poked, until ``stop``."""
        while not stop.is_set():
            self._poked.clear()
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("rollout engine step failed; will retry")
            deadline = time.monotonic() + ROLLOUT_TICK_S
            while not stop.is_set() and not self._poked.is_set():
                if time.monotonic() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_POLL_S)

    def _notify(self, regions: list[str]) -> None:
        if regions:
            self.notifier.notify(bundle_key(region, POLICY_BUNDLE) for region in regions)
            self._on_change()
