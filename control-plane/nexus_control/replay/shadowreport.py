"""The shadow report: a candidate's live shadow outcomes in one region, as a replay report.

The enforcers' shadow leaves (`nexus_audit.shadows`) are counted by
`nexus_control.replay.report.build_report` into the replay report's buckets,
groups and samples, so the CLI and the gates read both the same way. A live
sample is always replayable (the enforcer had the input in hand), so
``not_replayable`` is 0; the baseline is ``recorded``: each decision's active
revision. Evaluation times are the candidate's only (the active side's are the
decision metrics'), so a p99 inflation gate cannot be judged on a shadow.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nexus_audit.entry import format_time
from nexus_audit.service import AuditLog
from nexus_audit.shadows import ShadowLeaf, shadow_leaves
from nexus_control.replay.records import ReplayRecord, tool_of_route
from nexus_control.replay.report import (
    Change,
    ReplayOutcome,
    ReplayReport,
    ReplayScope,
    build_report,
)

__all__ = ["MAX_SHADOW_OUTCOMES", "SHADOW_REPORT_KIND", "outcome_of", "shadow_report"]

MAX_SHADOW_OUTCOMES = 200_000
"""The most shadow outcomes one report counts (the oldest first; its scope's ``limit``)."""
SHADOW_REPORT_KIND = "shadow_report"


def _result(verdict: Any) -> Mapping[str, Any] | None:
    """A shadow verdict as a result the report reads (its reasons without messages)."""
    if not isinstance(verdict, Mapping):
        return None
    reasons = [
        {"rule": r.get("rule", ""), "message": "", "controls": r.get("controls", [])}
        for r in verdict.get("reasons", [])
        if isinstance(r, Mapping)
    ]
    return {
        "allowed": bool(verdict.get("allowed")),
        "http_status": verdict.get("http_status"),
        "reasons": reasons,
    }


def outcome_of(leaf: ShadowLeaf) -> ReplayOutcome:
    """One shadow leaf as the replay report counts it."""
    entry = leaf.entry
    active = _result(entry.get("active")) or {}
    route = str(entry.get("route", ""))
    tool = entry.get("tool")
    record = ReplayRecord(
        index=leaf.index,
        decision_id=str(entry.get("decision_id", "")),
        time=leaf.time,
        tenant=leaf.tenant,
        region=str(entry.get("region", "")),
        route=route,
        tool=str(tool) if isinstance(tool, str) else tool_of_route(route),
        revision=str(entry.get("active_revision") or "") or None,
        allowed=bool(active.get("allowed")),
        http_status=active.get("http_status"),
        input=None,
        result=active,
        now_ns=0,
        blocked=None,
    )
    change = Change(str(entry.get("change")))
    error = entry.get("error")
    eval_ns = entry.get("eval_ns")
    return ReplayOutcome(
        record=record,
        change=change,
        before=active,
        after=_result(entry.get("candidate")),
        why=str(error) if change is Change.ERROR and error is not None else None,
        after_ns=eval_ns if isinstance(eval_ns, int) else None,
        baseline_revision=record.revision,
    )


def shadow_report(
    audit: AuditLog,
    *,
    region: str,
    candidate: str,
    since: datetime,
    until: datetime,
    limit: int = MAX_SHADOW_OUTCOMES,
) -> ReplayReport:
    """The report of ``candidate``'s shadow outcomes in ``region`` over [since, until)."""
    with audit.db.session() as session:
        leaves = shadow_leaves(
            session, region=region, candidate=candidate, since=since, until=until, limit=limit
        )
    scope = ReplayScope(
        candidate=candidate,
        baseline=None,
        since=format_time(since),
        until=format_time(until),
        limit=limit,
    )
    return build_report(
        scope, (outcome_of(leaf) for leaf in leaves), wall_s=0.0, kind=SHADOW_REPORT_KIND
    )
