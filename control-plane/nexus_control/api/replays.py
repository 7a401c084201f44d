"""Replaying a candidate over the audit log's recorded decisions (needs the co-located log)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request

from nexus_audit.service import AuditLog
from nexus_control.api.deps import FleetReaderDep, PlaneDep
from nexus_control.api.models import (
    GateResultModel,
    ReplayRequest,
    ReplayResult,
    ReplaySideTiming,
    ReplayTiming,
)
from nexus_control.plane import ControlPlane
from nexus_control.replay.candidate import SignedBundle, load_archive, load_revision
from nexus_control.replay.gatekeeper import risk_judge
from nexus_control.replay.gates import DEFAULT_WINDOW_HOURS, judge
from nexus_control.replay.service import Replayer, ReplayWindow
from nexus_control.rollout.rollouts import Gate
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["MAX_REPLAY_BODY", "gate_of", "replay", "router"]

router = APIRouter(prefix="/v1/replays", tags=["replay"])
MAX_REPLAY_BODY = 64 * 1024 * 1024


def _candidate(plane: ControlPlane, body: ReplayRequest) -> SignedBundle:
    if (body.candidate_revision is None) == (body.candidate_archive is None):
        raise ApiError(400, "invalid_request", "give candidate_revision or candidate_archive")
    if body.candidate_revision is not None:
        return load_revision(plane.registry, plane.keyring, plane.opa, body.candidate_revision)
    try:
        archive = base64.b64decode(body.candidate_archive or "", validate=True)
    except binascii.Error:
        raise ApiError(400, "invalid_request", "candidate_archive is not base64") from None
    return load_archive(archive, plane.keyring, plane.opa, what="the candidate archive")


def _run(plane: ControlPlane, audit: AuditLog, body: ReplayRequest, actor: str) -> ReplayResult:
    gates = plane.fleet.replay_gates
    until = body.until or datetime.now(UTC)
    hours = gates.window_hours if gates is not None else DEFAULT_WINDOW_HOURS
    since = body.since or until - timedelta(hours=hours)
    window = ReplayWindow(since, until, body.tenant, body.route, body.tool, body.sample,
                          body.limit)  # fmt: skip
    window.check()
    candidate = _candidate(plane, body)
    replayer = Replayer(plane.db, audit, plane.registry, plane.keyring, plane.opa)
    report = replayer.replay(candidate, window, baseline=body.baseline)
    base = plane.rollouts.base_revision()
    current = (
        load_revision(plane.registry, plane.keyring, plane.opa, base)
        if base is not None and base != candidate.revision
        else None
    )
    verdict = judge(gates, report, risk_judge(candidate, current)) if gates is not None else None
    signature = replayer.record(report, actor, verdict=verdict)
    timing = report.timing
    return ReplayResult(
        report=report.body.decode(),
        digest=report.digest,
        signature=signature,
        timing=ReplayTiming(
            baseline=ReplaySideTiming(p50_ns=timing.baseline_p50_ns, p99_ns=timing.baseline_p99_ns),
            candidate=ReplaySideTiming(
                p50_ns=timing.candidate_p50_ns, p99_ns=timing.candidate_p99_ns
            ),
            wall_s=timing.wall_s,
            decisions_per_s=timing.decisions_per_s,
        ),
        gates_passed=verdict.passed if verdict is not None else None,
        gates=[GateResultModel(**r.as_dict()) for r in verdict.results] if verdict else [],
    )


def gate_of(request: Request, plane: ControlPlane) -> Gate | None:
    """The replay gate a rollout waits for (`ControlPlane.replay_gate`), over the served log."""
    audit = getattr(request.app.state, "audit_log", None)
    return plane.replay_gate(audit if isinstance(audit, AuditLog) else None)


@router.post("", response_model=ReplayResult)
async def replay(request: Request, plane: PlaneDep, principal: FleetReaderDep) -> ReplayResult:
    """Replay a signed candidate over a window of recorded decisions; the report is evidence.

    The report is signed and appended to the audit log (``replay.reported``),
    with the gates' verdict (``replay.gate_verdict``) when the fleet declares gates.
    """
    audit = getattr(request.app.state, "audit_log", None)
    if not isinstance(audit, AuditLog):
        raise ApiError(409, "no_audit_log", "replay needs the audit log served with the plane")
    body = parse_body(ReplayRequest, await read_body(request, MAX_REPLAY_BODY))
    return await asyncio.to_thread(_run, plane, audit, body, principal.name)
