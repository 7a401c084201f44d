"""The states a rollout, a wave and an enforcer can be in, and how they are read.

A rollout: ``pending_approval`` → ``rolling`` ⇄ ``paused`` → ``completed``; with
replay gates declared, ``held`` before its first wave starts (while the gate
replays the candidate, and after a failing verdict until an approver overrides
it or a new publication supersedes it); or
``halted`` (an activation error or a missed deadline rolled its regions back),
``rolled_back`` (by an operator) and ``superseded`` (a newer publication took
over). An enforcer, for the revision its region should run: ``active``
(reported it active, no error), ``pending``, ``failed`` (an activation error
after downloading it) or ``down`` (not seen within the fleet's staleness).
Convergence is read per enforcer from its status reports, never assumed
(`nexus_control.rollout.convergence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "EnforcerState",
    "EnforcerStatus",
    "RegionState",
    "RolloutAction",
    "RolloutState",
    "WaveState",
]


class RolloutState(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    ROLLING = "rolling"
    PAUSED = "paused"
    HELD = "held"
    """A replay gate runs or failed: no wave starts until an approver overrides it."""
    COMPLETED = "completed"
    HALTED = "halted"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"


ACTIVE_STATES = (
    RolloutState.PENDING_APPROVAL,
    RolloutState.HELD,
    RolloutState.ROLLING,
    RolloutState.PAUSED,
)
"""A rollout in one of these may still change what a region runs."""
TERMINAL_STATES = (
    RolloutState.COMPLETED,
    RolloutState.HALTED,
    RolloutState.ROLLED_BACK,
    RolloutState.SUPERSEDED,
)


class WaveState(StrEnum):
    """Where the rollout's current wave is."""

    WAITING = "waiting"
    """Not started: waiting for an approval."""
    ACTIVATING = "activating"
    """Assigned; not every expected enforcer reports it active yet."""
    SOAKING = "soaking"
    """Every enforcer reports it active; the soak period is running."""
    DONE = "done"
    """The rollout ended (completed, halted, rolled back or superseded)."""


class RolloutAction(StrEnum):
    """What a rollout history entry (and its audit event ``rollout.<action>``) records."""

    CREATED = "created"
    APPROVED = "approved"
    HELD = "held"
    """A replay gate started, or its verdict failed (the detail names the failed gates)."""
    GATE_PASSED = "gate_passed"
    OVERRIDDEN = "overridden"
    """An approver released a held rollout; the detail is their reason."""
    WAVE_STARTED = "wave_started"
    WAVE_CONVERGED = "wave_converged"
    WAVE_COMPLETED = "wave_completed"
    COMPLETED = "completed"
    PAUSED = "paused"
    RESUMED = "resumed"
    HALTED = "halted"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_IMPOSSIBLE = "rollback_impossible"
    SUPERSEDED = "superseded"


class EnforcerState(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    FAILED = "failed"
    DOWN = "down"


@dataclass(frozen=True)
class EnforcerStatus:
    """One expected enforcer as the rollout sees it."""

    id: str
    state: EnforcerState
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
    enforcers: tuple[EnforcerStatus, ...] = field(default_factory=tuple)
    assigned_at: datetime | None = None
    """When ``desired`` was assigned to the region (the engine's wave start or rollback)."""

    @property
    def converged(self) -> bool:
        return bool(self.enforcers) and all(e.state is EnforcerState.ACTIVE for e in self.enforcers)

    @property
    def convergence(self) -> float:
        if not self.enforcers:
            return 0.0
        active = sum(e.state is EnforcerState.ACTIVE for e in self.enforcers)
        return active / len(self.enforcers)

    @property
    def failed(self) -> list[EnforcerStatus]:
        return [e for e in self.enforcers if e.state is EnforcerState.FAILED]
