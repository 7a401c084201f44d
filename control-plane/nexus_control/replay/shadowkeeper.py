"""The shadow gate's judge: the next wave's shadow reports against the fleet's shadow gates.

`ShadowGatekeeper` is the `nexus_control.rollout.shadowgate.WaveGate` of a
control plane served with its audit log. Fail closed: a shadow with no outcome
yet, a candidate whose risk cannot be read, or a report that cannot be made
is a failing verdict with its reason, never a silent pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from nexus_audit.service import AuditLog
from nexus_contract.errors import NexusError
from nexus_contract.wire import SHADOW_BUNDLE
from nexus_control.access.keyring import KeyPurpose, Keyring
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.spec import RiskLevel
from nexus_control.registry.registry import Registry
from nexus_control.replay.candidate import load_revision
from nexus_control.replay.gatekeeper import risk_judge
from nexus_control.replay.gates import GateResult, GateVerdict, ShadowGates, judge
from nexus_control.replay.shadowreport import shadow_report
from nexus_control.rollout.fleet import Fleet
from nexus_control.rollout.shadowgate import (
    SealedReport,
    WaveVerdict,
    combined,
    shadowed_regions,
)
from nexus_control.store.tables import RegionTarget, Rollout
from nexus_runtime.keys.jws import sign_compact

__all__ = ["ShadowGatekeeper"]

log = logging.getLogger("nexus.control.replay")


class ShadowGatekeeper:
    """Judges promotion into a wave on that wave's shadows of the rollout's revision."""

    def __init__(
        self,
        audit: AuditLog,
        registry: Registry,
        keyring: Keyring,
        opa: Opa,
        fleet: Fleet,
        gates: ShadowGates,
    ) -> None:
        self.audit = audit
        self.registry = registry
        self.keyring = keyring
        self.opa = opa
        self.fleet = fleet
        self.gates = gates
        self._risk: dict[tuple[str, str | None], Callable[[str], RiskLevel | None]] = {}

    def __call__(self, session: Session, rollout: Rollout, wave: int) -> WaveVerdict | None:
        regions = [r.id for r in self.fleet.wave(wave)]
        shadowed = shadowed_regions(session, regions, rollout.revision)
        if not shadowed:
            if not self.gates.required:
                return None
            return WaveVerdict(
                wave, False,
                f"no shadow of revision {rollout.revision[:12]} runs in wave {wave} "
                f"({', '.join(regions)}) and shadowGates.required is set: put it in shadow "
                "there (nexus-policy shadow start)",
            )  # fmt: skip
        try:
            risk_of = self._risk_of(rollout)
            parts = []
            sealed = []
            for region in shadowed:
                target = session.get(RegionTarget, (region, SHADOW_BUNDLE))
                assert target is not None
                since = target.updated_at
                if since.tzinfo is None:
                    since = since.replace(tzinfo=UTC)
                report = shadow_report(
                    self.audit, region=region, candidate=rollout.revision,
                    since=since, until=datetime.now(UTC),
                )  # fmt: skip
                verdict = judge(self.gates, report, risk_of)
                if report.total == 0:
                    empty = GateResult("shadow_outcomes", False, 0.0, 1.0,
                                       note="no shadow outcome logged yet")  # fmt: skip
                    verdict = GateVerdict((*verdict.results, empty))
                parts.append((region, verdict, report.digest))
                key, kid = self.keyring.signer(KeyPurpose.BUNDLE)
                signature = sign_compact(key, kid, report.body)
                sealed.append(SealedReport(region, report.digest, report.total, signature, kid))
        except NexusError as error:
            return WaveVerdict(wave, False, f"the shadow gate could not be judged: {error}")
        except Exception:
            log.exception("shadow gate of rollout %s failed", rollout.id)
            return WaveVerdict(
                wave, False, "the shadow gate failed unexpectedly (see the control plane's log)"
            )
        return combined(wave, parts, sealed)

    def _risk_of(self, rollout: Rollout) -> Callable[[str], RiskLevel | None]:
        """Tools' risk from the candidate and the revision it replaces (read once per pair)."""
        key = (rollout.revision, rollout.base_revision)
        if key not in self._risk:
            candidate = load_revision(self.registry, self.keyring, self.opa, rollout.revision)
            base = rollout.base_revision
            current = (
                load_revision(self.registry, self.keyring, self.opa, base)
                if base is not None and base != rollout.revision
                else None
            )
            self._risk = {key: risk_judge(candidate, current)}
        return self._risk[key]
