"""The replay report: each record in one bucket, counted by tenant, route, rule, control and
prompt version (seed §14.2: what a change does to each version's decisions), with the
records whose routed prompt version moved counted per move.

Pure accounting over `ReplayOutcome`s; no I/O. The report body
(`ReplayReport.body`) is a function of the records and the two revisions
only, written as canonical JSON, so the same window replayed twice gives
byte-identical bytes (and one digest to sign). Evaluation times are
measurements, kept beside the body (`ReplayReport.timing`), never in it.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nexus_contract.canonical import canonical_json
from nexus_contract.wire import PROMPT_HEADER, PROMPT_VERSION_HEADER
from nexus_control.replay.records import NotReplayable, ReplayRecord

__all__ = [
    "REPORT_VERSION",
    "SAMPLES_PER_BUCKET",
    "Change",
    "ReplayOutcome",
    "ReplayReport",
    "ReplayScope",
    "Timing",
    "build_report",
    "compare",
    "percentile",
]

REPORT_VERSION = 2
SAMPLES_PER_BUCKET = 5
_COMPARED_HEADERS = ("headers", "response_headers_to_add")


class Change(StrEnum):
    UNCHANGED = "unchanged"
    ALLOW_TO_DENY = "allow_to_deny"
    DENY_TO_ALLOW = "deny_to_allow"
    STATUS_CHANGED = "status_changed"
    HEADERS_CHANGED = "headers_changed"
    ERROR = "error"
    NOT_REPLAYABLE = "not_replayable"


@dataclass(frozen=True)
class ReplayScope:
    """What was replayed: the window and filters, and both revisions."""

    candidate: str
    baseline: str | None
    """A named baseline revision; None: each decision's own revision."""
    since: str
    until: str
    tenant: str | None = None
    route: str | None = None
    tool: str | None = None
    sample: float | None = None
    limit: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "baseline": self.baseline or "recorded",
            "window": {"since": self.since, "until": self.until},
            "filters": {
                "tenant": self.tenant,
                "route": self.route,
                "tool": self.tool,
                "sample": self.sample,
                "limit": self.limit,
            },
        }


@dataclass(frozen=True)
class ReplayOutcome:
    """One record's fate: its bucket, both results and evaluation times."""

    record: ReplayRecord
    change: Change
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    why: str | None = None
    """The not-replayable reason or the error code."""
    detail: str | None = None
    """What made it so (the masked path, the built-in, the revision)."""
    before_ns: int | None = None
    after_ns: int | None = None
    baseline_revision: str | None = None


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> Change:
    """The bucket of a baseline result and a candidate result."""
    was, now = bool(before.get("allowed")), bool(after.get("allowed"))
    if was and not now:
        return Change.ALLOW_TO_DENY
    if now and not was:
        return Change.DENY_TO_ALLOW
    if before.get("http_status") != after.get("http_status"):
        return Change.STATUS_CHANGED
    if any(before.get(name) != after.get(name) for name in _COMPARED_HEADERS):
        return Change.HEADERS_CHANGED
    return Change.UNCHANGED


def percentile(values: Sequence[int], fraction: float) -> int | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Timing:
    baseline_p50_ns: int | None
    baseline_p99_ns: int | None
    candidate_p50_ns: int | None
    candidate_p99_ns: int | None
    wall_s: float
    decisions_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": {"p50_ns": self.baseline_p50_ns, "p99_ns": self.baseline_p99_ns},
            "candidate": {"p50_ns": self.candidate_p50_ns, "p99_ns": self.candidate_p99_ns},
            "wall_s": round(self.wall_s, 3),
            "decisions_per_s": round(self.decisions_per_s, 1),
        }


@dataclass(frozen=True)
class ReplayReport:
    body: bytes
    """Canonical JSON of the report (deterministic)."""
    counts: Mapping[Change, int]
    not_replayable: Mapping[str, int]
    deny_to_allow_by_tool: Mapping[str, int]
    total: int
    timing: Timing

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.body).hexdigest()

    def fraction(self, change: Change) -> float:
        return self.counts.get(change, 0) / self.total if self.total else 0.0


def _reasons(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    reasons = result.get("reasons") if result else None
    if not isinstance(reasons, list):
        return []
    shown = []
    for reason in reasons:
        if isinstance(reason, dict):
            controls = reason.get("controls")
            shown.append(
                {
                    "rule": str(reason.get("rule", "")),
                    "message": str(reason.get("message", "")),
                    "controls": sorted(str(c) for c in controls)
                    if isinstance(controls, list)
                    else [],
                }
            )
    return sorted(shown, key=lambda r: (r["rule"], r["message"]))


def _keys(outcome: ReplayOutcome) -> tuple[set[str], set[str]]:
    rules: set[str] = set()
    controls: set[str] = set()
    before = outcome.before if outcome.before is not None else outcome.record.result
    for reason in [*_reasons(before), *_reasons(outcome.after)]:
        if reason["rule"]:
            rules.add(reason["rule"])
        controls.update(reason["controls"])
    return rules or {"(none)"}, controls or {"(none)"}


def _prompt_version(record: ReplayRecord, result: Mapping[str, Any] | None) -> str | None:
    """``prompt@version`` a result routed the request to, or None when it routed none.

    The version is the policy's (the upstream header it set, so only a prompt the
    catalog knows); the prompt is the one the request named (``id`` or ``id@version``).
    """
    headers = result.get("headers") if result else None
    version = headers.get(PROMPT_VERSION_HEADER) if isinstance(headers, Mapping) else None
    if not isinstance(version, str):
        return None
    try:
        asked = record.input["attributes"]["request"]["http"]["headers"][PROMPT_HEADER]
    except (KeyError, TypeError):
        return None
    return f"{asked.partition('@')[0]}@{version}" if isinstance(asked, str) else None


def _grouped(table: Mapping[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {key: dict(sorted(table[key].items())) for key in sorted(table)}


def build_report(
    scope: ReplayScope,
    outcomes: Iterable[ReplayOutcome],
    *,
    wall_s: float,
    kind: str = "replay_report",
) -> ReplayReport:
    """Count ``outcomes`` (any order: they are sorted by leaf index first).

    ``kind`` names the report's source: ``shadow_report`` counts live shadow
    outcomes (`nexus_control.replay.shadowreport`) in the same buckets.
    """
    ordered = sorted(outcomes, key=lambda o: o.record.index)
    counts: Counter[Change] = Counter()
    blocked: Counter[str] = Counter()
    risky: Counter[str] = Counter()
    groups: dict[str, defaultdict[str, Counter[str]]] = {
        name: defaultdict(Counter)
        for name in ("tenant", "route", "rule", "control", "prompt_version")
    }
    moves: Counter[str] = Counter()
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    before_ns: list[int] = []
    after_ns: list[int] = []
    for outcome in ordered:
        record, change = outcome.record, outcome.change
        counts[change] += 1
        if change is Change.NOT_REPLAYABLE:
            blocked[outcome.why or "unknown"] += 1
        if change is Change.DENY_TO_ALLOW and record.tool is not None:
            risky[record.tool] += 1
        rules, controls = _keys(outcome)
        bucket = change.value
        groups["tenant"][record.tenant][bucket] += 1
        groups["route"][record.route][bucket] += 1
        for rule in rules:
            groups["rule"][rule][bucket] += 1
        for control in controls:
            groups["control"][control][bucket] += 1
        was = _prompt_version(record, outcome.before or record.result)
        if was is not None:
            groups["prompt_version"][was][bucket] += 1
            now = _prompt_version(record, outcome.after)
            if now is not None and now != was:
                moves[f"{was} → {now}"] += 1
        if len(samples[bucket]) < SAMPLES_PER_BUCKET:
            sample: dict[str, Any] = {
                "decision_id": record.decision_id,
                "tenant": record.tenant,
                "route": record.route,
                "recorded_revision": record.revision,
                "baseline_revision": outcome.baseline_revision,
                "before": _reasons(outcome.before if outcome.before is not None else record.result),
                "after": _reasons(outcome.after),
            }
            if outcome.why is not None:
                sample["why"] = outcome.why
            if outcome.detail is not None:
                sample["detail"] = outcome.detail
            samples[bucket].append(sample)
        if outcome.before_ns is not None:
            before_ns.append(outcome.before_ns)
        if outcome.after_ns is not None:
            after_ns.append(outcome.after_ns)
    total = len(ordered)
    body = canonical_json(
        {
            "v": REPORT_VERSION,
            "kind": kind,
            "scope": scope.as_dict(),
            "total": total,
            "counts": {change.value: counts.get(change, 0) for change in Change},
            "not_replayable": {
                reason.value: blocked.get(reason.value, 0) for reason in NotReplayable
            },
            "deny_to_allow_by_tool": dict(sorted(risky.items())),
            "prompt_version_moves": dict(sorted(moves.items())),
            "by": {name: _grouped(table) for name, table in sorted(groups.items())},
            "samples": {key: samples[key] for key in sorted(samples)},
        }
    )
    timing = Timing(
        percentile(before_ns, 0.5),
        percentile(before_ns, 0.99),
        percentile(after_ns, 0.5),
        percentile(after_ns, 0.99),
        wall_s,
        total / wall_s if wall_s > 0 else 0.0,
    )
    return ReplayReport(
        body=body,
        counts=dict(counts),
        not_replayable=dict(blocked),
        deny_to_allow_by_tool=dict(risky),
        total=total,
        timing=timing,
    )
