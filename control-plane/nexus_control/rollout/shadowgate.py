"""The shadow gate: a rollout enters its next wave only when that wave's shadow says it may.

When a wave is done (converged and soaked, or promoted by hand), the engine asks
the rollout's `WaveGate` about the next wave. With ``shadow_gates`` declared,
the gate looks for a shadow of the rollout's revision in that wave's regions
(`nexus_control.rollout.shadow`) and judges the shadow report of each
(`nexus_control.replay.shadowreport`) against the declared limits. A failing
verdict keeps the rollout in its wave, rolling, with the failed gates as its
reason (rollout status shows it); the engine judges again at every step, so
a gate that lacked samples passes once they arrive. A wave with no such
shadow is not gated, unless ``required`` (then it holds, with that reason).

Every verdict that differs from the last one recorded is an audit event
(``shadow.gate_verdict``), with each report it judged signed beside it
(``shadow.reported``: digest, JWS over the report's bytes), and a history entry: a
verdict repeated at every step is one event, not one a second. An approver, never the
author (by principal), may release a held wave with a recorded reason
(``shadow.gate_overridden``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.wire import SHADOW_BUNDLE
from nexus_control.replay.gates import GateVerdict
from nexus_control.rollout.states import RolloutAction
from nexus_control.store import outbox
from nexus_control.store.tables import RegionTarget, Rollout, RolloutEvent

__all__ = [
    "SHADOW_HELD",
    "SealedReport",
    "WaveGate",
    "WaveVerdict",
    "combined",
    "describe_failed",
    "is_held",
    "record_override",
    "record_verdict",
    "shadowed_regions",
]

SHADOW_HELD = "shadow gate failed: "
"""The reason of a rollout its shadow gate keeps in its wave starts with this."""


@dataclass(frozen=True)
class SealedReport:
    """A shadow report the gate judged, signed (JWS by the active bundle key over its
    canonical bytes): the evidence of what a verdict was made on."""

    region: str
    digest: str
    total: int
    signature: str
    kid: str


@dataclass(frozen=True)
class WaveVerdict:
    """The shadow gate's verdict on promoting a rollout into ``wave``."""

    wave: int
    passed: bool
    detail: str
    digests: tuple[str, ...] = ()
    """Of the shadow reports judged (one per shadowed region)."""
    reports: tuple[SealedReport, ...] = ()
    """The same reports, signed; each is recorded (``shadow.reported``) with a new verdict."""


WaveGate = Callable[[Session, Rollout, int], WaveVerdict | None]
"""The verdict on promoting a rollout into a wave; None: no shadow gate applies to it."""


def shadowed_regions(session: Session, regions: Collection[str], revision: str) -> list[str]:
    """Those of ``regions`` that shadow ``revision`` now."""
    rows = session.scalars(
        select(RegionTarget.region).where(
            RegionTarget.bundle == SHADOW_BUNDLE,
            RegionTarget.desired_revision == revision,
            RegionTarget.region.in_(sorted(regions)),
        )
    )
    return sorted(rows)


def describe_failed(verdict: GateVerdict) -> str:
    return "; ".join(
        f"{r.gate}: observed {r.observed:g}, limit {r.limit:g}"
        if r.note is None
        else f"{r.gate}: {r.note}"
        for r in verdict.results
        if not r.passed
    )


def is_held(rollout: Rollout) -> bool:
    return (rollout.reason or "").startswith(SHADOW_HELD)


def record_verdict(session: Session, rollout: Rollout, verdict: WaveVerdict, actor: str) -> bool:
    """Record ``verdict`` on ``rollout`` if it is news; whether the rollout may enter the wave."""
    reason = None if verdict.passed else SHADOW_HELD + verdict.detail
    if not verdict.passed and rollout.reason == reason:
        return False
    outbox.record(
        session,
        "shadow.gate_verdict",
        actor,
        rollout=rollout.id,
        revision=rollout.revision,
        wave=verdict.wave,
        passed=verdict.passed,
        detail=verdict.detail,
        digests=list(verdict.digests),
    )
    for report in verdict.reports:
        outbox.record(
            session,
            "shadow.reported",
            actor,
            rollout=rollout.id,
            revision=rollout.revision,
            wave=verdict.wave,
            region=report.region,
            digest=report.digest,
            total=report.total,
            signature=report.signature,
            kid=report.kid,
        )
    action = RolloutAction.GATE_PASSED if verdict.passed else RolloutAction.HELD
    session.add(
        RolloutEvent(
            rollout_id=rollout.id,
            at=_now(),
            actor=actor,
            action=action.value,
            region=None,
            detail=f"shadow gate for wave {verdict.wave}: {verdict.detail}",
        )
    )
    rollout.reason = reason
    rollout.updated_at = _now()
    return verdict.passed


def record_override(
    session: Session, rollout: Rollout, approver: str, approver_id: str, reason: str
) -> None:
    """An approver's release of a wave the shadow gate holds (the caller checked who)."""
    outbox.record(
        session,
        "shadow.gate_overridden",
        approver,
        rollout=rollout.id,
        revision=rollout.revision,
        approver_principal=approver_id,
        held_for=rollout.reason,
        reason=reason,
    )
    session.add(
        RolloutEvent(
            rollout_id=rollout.id,
            at=_now(),
            actor=approver,
            action=RolloutAction.OVERRIDDEN.value,
            region=None,
            detail=reason,
        )
    )
    rollout.reason = None
    rollout.updated_at = _now()


def combined(
    wave: int,
    parts: Sequence[tuple[str, GateVerdict, str]],
    reports: Sequence[SealedReport] = (),
) -> WaveVerdict:
    """One verdict of the gates judged per shadowed region: (region, verdict, report digest)."""
    failed = [f"{region}: {describe_failed(v)}" for region, v, _ in parts if not v.passed]
    digests = tuple(digest for _, _, digest in parts)
    if failed:
        return WaveVerdict(wave, False, "; ".join(failed), digests, tuple(reports))
    shadowed = ", ".join(region for region, _, _ in parts)
    return WaveVerdict(
        wave, True, f"every gate passed on the shadow in {shadowed}", digests, tuple(reports)
    )


def _now() -> datetime:
    return datetime.now(UTC)
