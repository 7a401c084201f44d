"""The replay gate of a rollout: replay the candidate over the gate window, judge, record.

A rollout held for its gate (`nexus_control.rollout.engine.GATE_PENDING`)
gets its verdict from `Gatekeeper.judge_revision`: the revision (signed by
then) is replayed over the decisions of the last ``window_hours`` against the
revisions that made them, every configured gate is judged, and the report and
verdict are appended to the audit log bound to the rollout. Fail closed: a
replay that cannot be made (no recorded decision in the window, a refused
candidate, OPA failing) is a failing verdict, recorded with its reason, never
a silent pass. The one pass without a replay is a fleet's first publication:
no policy is in force, so no recorded decision can show what would change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nexus_audit.service import AuditLog
from nexus_contract.errors import NexusError
from nexus_control.access.keyring import Keyring
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.spec import RiskLevel
from nexus_control.registry.registry import Registry
from nexus_control.replay.candidate import SignedBundle, load_revision
from nexus_control.replay.gates import GateVerdict, ReplayGates, judge
from nexus_control.replay.report import ReplayReport
from nexus_control.replay.service import Replayer, ReplayWindow
from nexus_control.store import outbox
from nexus_runtime.database import Database

__all__ = ["GateOutcome", "Gatekeeper", "risk_judge"]

log = logging.getLogger("nexus.control.replay")


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    detail: str
    """What the rollout history shows: the failed gates, or why the replay could not run."""
    digest: str | None = None
    """The recorded report's digest (None when no replay was made)."""


def risk_judge(
    candidate: SignedBundle, current: SignedBundle | None
) -> Callable[[str], RiskLevel | None]:
    """A tool's risk: the higher of the candidate's and the running revision's."""

    def risk_of(tool: str) -> RiskLevel | None:
        levels = [b.risk_of(tool) for b in (candidate, current) if b is not None]
        known = [level for level in levels if level is not None]
        return max(known, key=lambda level: level.rank) if known else None

    return risk_of


class Gatekeeper:
    """Judges revisions against the fleet's replay gates, over the co-located audit log."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        registry: Registry,
        keyring: Keyring,
        opa: Opa,
        gates: ReplayGates,
        *,
        base_revision: Callable[[], str | None],
    ) -> None:
        self.db = db
        self.gates = gates
        self.registry = registry
        self.keyring = keyring
        self.opa = opa
        self.replayer = Replayer(db, audit, registry, keyring, opa)
        self._base_revision = base_revision

    def verdict(
        self, candidate: SignedBundle, report: ReplayReport, base: str | None
    ) -> GateVerdict:
        current = (
            load_revision(self.registry, self.keyring, self.opa, base)
            if base is not None and base != candidate.revision
            else None
        )
        return judge(self.gates, report, risk_judge(candidate, current))

    def judge_revision(self, revision: str, rollout_id: int, actor: str) -> GateOutcome:
        """Replay ``revision`` over the gate window and record the verdict; never raises."""
        base = self._base_revision()
        if base is None:
            return self._unjudged(
                revision, rollout_id, actor, passed=True,
                why="no policy is in force yet: no recorded decision to replay",
            )  # fmt: skip
        until = datetime.now(UTC)
        window = ReplayWindow(until - timedelta(hours=self.gates.window_hours), until)
        try:
            candidate = load_revision(self.registry, self.keyring, self.opa, revision)
            report = self.replayer.replay(candidate, window)
            verdict = self.verdict(candidate, report, base)
            self.replayer.record(report, actor, verdict=verdict, rollout_id=rollout_id)
        except NexusError as error:
            return self._unjudged(
                revision, rollout_id, actor, passed=False,
                why=f"the replay could not be made: {error}",
            )  # fmt: skip
        except Exception:
            log.exception("replay gate of rollout %s failed", rollout_id)
            return self._unjudged(
                revision, rollout_id, actor, passed=False,
                why="the replay failed unexpectedly (see the control plane's log)",
            )  # fmt: skip
        if verdict.passed:
            return GateOutcome(True, f"every gate passed (report {report.digest})", report.digest)
        failed = "; ".join(
            f"{r.gate}: observed {r.observed:g}, limit {r.limit:g}"
            if r.note is None
            else f"{r.gate}: {r.note}"
            for r in verdict.results
            if not r.passed
        )
        return GateOutcome(False, f"{failed} (report {report.digest})", report.digest)

    def _unjudged(
        self, revision: str, rollout_id: int, actor: str, *, passed: bool, why: str
    ) -> GateOutcome:
        with self.db.session() as session:
            outbox.record(
                session,
                "replay.gate_verdict",
                actor,
                candidate=revision,
                digest=None,
                passed=passed,
                gates=[],
                rollout_id=rollout_id,
                reason=why,
            )
        return GateOutcome(passed, why)
