"""Replay as a service: read a window of recorded decisions, evaluate both sides, record evidence.

`Replayer.replay` reads the records (`nexus_audit` pages them in leaf order
over the tree as it stood), evaluates the replayable ones against each
baseline revision and the candidate with the real OPA (`evaluator`), and
counts them (`report`). `Replayer.record` signs the report body (JWS by the
control plane's bundle key, ``cty: nexus-replay-report``) and appends a
``replay.reported`` event bound to both revisions, the window and the body's
digest, in one transaction; nothing is appended for a replay that failed.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from nexus_audit.entry import format_time
from nexus_audit.service import AuditLog
from nexus_contract.errors import NexusError
from nexus_control.access.keyring import KeyPurpose, Keyring
from nexus_control.authoring.opa import Opa
from nexus_control.registry.registry import Registry
from nexus_control.replay.candidate import CandidateError, SignedBundle, load_revision
from nexus_control.replay.evaluator import Evaluation, OpaEvaluator
from nexus_control.replay.gates import GateVerdict
from nexus_control.replay.records import NotReplayable, ReplayRecord, record_of
from nexus_control.replay.report import (
    Change,
    ReplayOutcome,
    ReplayReport,
    ReplayScope,
    build_report,
    compare,
)
from nexus_control.store import outbox
from nexus_runtime.database import Database
from nexus_runtime.keys.jws import sign_compact

__all__ = [
    "MAX_RECORDS",
    "EmptyWindowError",
    "InvalidWindowError",
    "ReplayError",
    "ReplayWindow",
    "Replayer",
    "sampled",
]

MAX_RECORDS = 1_000_000
"""Most records one replay reads (a larger window: narrow it or sample it)."""


class ReplayError(NexusError):
    """A replay could not be made; nothing was recorded."""


class InvalidWindowError(ReplayError):
    """The window or a filter is malformed."""


class EmptyWindowError(ReplayError):
    """No recorded decision matches the window and filters."""


@dataclass(frozen=True)
class ReplayWindow:
    since: datetime
    until: datetime
    tenant: str | None = None
    route: str | None = None
    tool: str | None = None
    sample: float | None = None
    """Keep a decision when a hash of its id falls below this fraction (deterministic)."""
    limit: int | None = None

    def check(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise InvalidWindowError("since and until must carry a time zone (RFC 3339)")
        if self.until <= self.since:
            raise InvalidWindowError("the window is empty: 'until' must be after 'since'")
        if self.sample is not None and not 0 < self.sample <= 1:
            raise InvalidWindowError("sample must be a fraction in (0, 1]")
        if self.limit is not None and not 1 <= self.limit <= MAX_RECORDS:
            raise InvalidWindowError(f"limit must be between 1 and {MAX_RECORDS}")

    def scope(self, candidate: str, baseline: str | None) -> ReplayScope:
        return ReplayScope(
            candidate=candidate,
            baseline=baseline,
            since=format_time(self.since),
            until=format_time(self.until),
            tenant=self.tenant,
            route=self.route,
            tool=self.tool,
            sample=self.sample,
            limit=self.limit,
        )


def sampled(decision_id: str, fraction: float) -> bool:
    """Whether ``decision_id`` is in a ``fraction`` sample: the same answer every time."""
    digest = hashlib.sha256(decision_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * (1 << 64)


class Replayer:
    """Replays candidates over the audit log's decisions, with the control plane's keys."""

    def __init__(
        self, db: Database, audit: AuditLog, registry: Registry, keyring: Keyring, opa: Opa
    ) -> None:
        self.db = db
        self.audit = audit
        self.registry = registry
        self.keyring = keyring
        self.opa = opa

    def records(self, window: ReplayWindow) -> list[ReplayRecord]:
        window.check()
        found: list[ReplayRecord] = []
        for page in self.audit.recorded_decisions(window.since, window.until, tenant=window.tenant):
            for leaf, opened in page:
                if window.sample is not None and not sampled(leaf.decision_id or "", window.sample):
                    continue
                record = record_of(leaf, opened)
                if window.route is not None and record.route != window.route:
                    continue
                if window.tool is not None and record.tool != window.tool:
                    continue
                found.append(record)
                if len(found) >= (window.limit or MAX_RECORDS):
                    return found
        return found

    def replay(
        self, candidate: SignedBundle, window: ReplayWindow, *, baseline: str | None = None
    ) -> ReplayReport:
        """The report of ``candidate`` against ``baseline`` (None: each decision's revision)."""
        records = self.records(window)
        if not records:
            raise EmptyWindowError(
                f"no recorded decision in [{format_time(window.since)}, "
                f"{format_time(window.until)}) matches the filters: widen the window"
            )
        started = time.perf_counter()
        outcomes = self._outcomes(candidate, records, baseline)
        return build_report(
            window.scope(candidate.revision, baseline),
            outcomes,
            wall_s=time.perf_counter() - started,
        )

    def _outcomes(
        self, candidate: SignedBundle, records: list[ReplayRecord], baseline: str | None
    ) -> list[ReplayOutcome]:
        outcomes: list[ReplayOutcome] = []
        by_revision: defaultdict[str, list[ReplayRecord]] = defaultdict(list)
        for record in records:
            if record.blocked is not None:
                outcomes.append(_blocked(record, record.blocked, record.detail))
                continue
            revision = baseline or record.revision
            if revision is None:
                outcomes.append(_blocked(record, NotReplayable.MISSING_REVISION, None))
                continue
            by_revision[revision].append(record)
        bundles: dict[str, SignedBundle] = {}
        for revision in sorted(by_revision):
            try:
                bundles[revision] = (
                    candidate
                    if revision == candidate.revision
                    else load_revision(self.registry, self.keyring, self.opa, revision)
                )
            except CandidateError:
                if baseline is not None:
                    raise
                for record in by_revision.pop(revision):
                    outcomes.append(_blocked(record, NotReplayable.MISSING_REVISION, revision))
        with _evaluator(self.opa.binary, candidate) as after_side:
            for revision, group in sorted(by_revision.items()):
                items = [(record.input, record.now_ns, record.region) for record in group]
                after = after_side.evaluate(items)
                if revision == candidate.revision:
                    before = after
                else:
                    with _evaluator(self.opa.binary, bundles[revision]) as before_side:
                        before = before_side.evaluate(items)
                outcomes.extend(
                    _judged(record, b, a, revision, recorded=baseline is None)
                    for record, b, a in zip(group, before, after, strict=True)
                )
        return outcomes

    def record(
        self,
        report: ReplayReport,
        actor: str,
        *,
        verdict: GateVerdict | None = None,
        rollout_id: int | None = None,
    ) -> str:
        """Sign ``report`` and append it (and the gates' verdict) to the audit log; the JWS."""
        key, kid = self.keyring.signer(KeyPurpose.BUNDLE)
        signature = sign_compact(key, kid, report.body)
        scope = _scope_of(report)
        with self.db.session() as session:
            outbox.record(
                session,
                "replay.reported",
                actor,
                **scope,
                digest=report.digest,
                total=report.total,
                counts={change.value: report.counts.get(change, 0) for change in Change},
                signature=signature,
                kid=kid,
                rollout_id=rollout_id,
            )
            if verdict is not None:
                outbox.record(
                    session,
                    "replay.gate_verdict",
                    actor,
                    candidate=scope["candidate"],
                    digest=report.digest,
                    passed=verdict.passed,
                    gates=[result.as_dict() for result in verdict.results],
                    rollout_id=rollout_id,
                )
        return signature


def _scope_of(report: ReplayReport) -> dict[str, object]:
    body = orjson.loads(report.body)
    scope = body["scope"]
    return {
        "candidate": scope["candidate"],
        "baseline": scope["baseline"],
        "since": scope["window"]["since"],
        "until": scope["window"]["until"],
        "filters": {k: v for k, v in scope["filters"].items() if v is not None},
    }


def _evaluator(binary: Path, bundle: SignedBundle) -> OpaEvaluator:
    return OpaEvaluator(
        binary,
        bundle.archive,
        public_pem=bundle.public_pem,
        kid=bundle.kid,
        algorithm=bundle.algorithm,
    )


def _blocked(record: ReplayRecord, why: NotReplayable, detail: str | None) -> ReplayOutcome:
    return ReplayOutcome(record, Change.NOT_REPLAYABLE, None, None, why=why.value, detail=detail)


def _judged(
    record: ReplayRecord, before: Evaluation, after: Evaluation, revision: str, *, recorded: bool
) -> ReplayOutcome:
    if before.result is None or after.result is None:
        change, why = Change.ERROR, before.error or after.error
    elif recorded and (
        bool(before.result.get("allowed")) != record.allowed
        or before.result.get("http_status") != record.http_status
    ):
        change, why = Change.NOT_REPLAYABLE, NotReplayable.BASELINE_NOT_REPRODUCED.value
    else:
        change, why = compare(before.result, after.result), None
    return ReplayOutcome(
        record,
        change,
        before.result,
        after.result if change is not Change.NOT_REPLAYABLE else None,
        why=why,
        before_ns=before.eval_ns,
        after_ns=after.eval_ns,
        baseline_revision=revision,
    )
