"""The replay report's accounting and the gates on it, over records built by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from nexus_audit.payloads import OpenedPayload, PayloadStatus
from nexus_audit.storage import StoredLeaf
from nexus_control.authoring.spec import RiskLevel
from nexus_control.replay.gates import ReplayGates, judge
from nexus_control.replay.records import NotReplayable, ReplayRecord, record_of
from nexus_control.replay.report import (
    Change,
    ReplayOutcome,
    ReplayScope,
    Timing,
    build_report,
    compare,
    percentile,
)

SCOPE = ReplayScope(candidate="c" * 64, baseline=None, since="2026-01-01T00:00:00Z",
                    until="2026-01-02T00:00:00Z")  # fmt: skip
TIME = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _record(index: int, *, tenant: str = "acme", route: str = "/v1/chat/completions",
            allowed: bool = True) -> ReplayRecord:  # fmt: skip
    tool = route.removeprefix("/v1/tools/").removesuffix(":invoke") if "tools" in route else None
    return ReplayRecord(index, f"d-{index:04d}", TIME, tenant, "eu-west-1", route, tool, "r" * 64,
                        allowed, 200 if allowed else 403, {}, None, 0, None)  # fmt: skip


def _result(allowed: bool, rule: str = "", status: int | None = None) -> dict[str, Any]:
    reasons = [{"rule": rule, "message": rule, "controls": ["SOC2:CC6.1"]}] if rule else []
    return {"allowed": allowed, "http_status": status or (200 if allowed else 403),
            "headers": {}, "reasons": reasons}  # fmt: skip


def _outcome(record: ReplayRecord, before: dict[str, Any], after: dict[str, Any]) -> ReplayOutcome:
    return ReplayOutcome(record, compare(before, after), before, after, before_ns=10, after_ns=20)


def test_each_kind_of_change_has_its_bucket() -> None:
    allow, deny = _result(True), _result(False, "nexus.rbac.denied")
    assert compare(allow, allow) is Change.UNCHANGED
    assert compare(allow, deny) is Change.ALLOW_TO_DENY
    assert compare(deny, allow) is Change.DENY_TO_ALLOW
    assert compare(deny, _result(False, "x", 429)) is Change.STATUS_CHANGED
    assert compare(allow, {**allow, "headers": {"x-nexus-route-model": "b"}}) is (
        Change.HEADERS_CHANGED
    )


def test_report_counts_groups_and_samples_in_leaf_order() -> None:
    search = "/v1/tools/crm-update:invoke"
    outcomes = [
        _outcome(_record(3, route=search, allowed=False), _result(False, "nexus.tools.approval"),
                 _result(True)),
        _outcome(_record(1), _result(True), _result(True)),
        _outcome(_record(2, tenant="hooli"), _result(True), _result(False, "nexus.rbac.denied")),
        ReplayOutcome(_record(4), Change.NOT_REPLAYABLE, None, None,
                      why=NotReplayable.PAYLOAD_ERASED.value),
    ]  # fmt: skip
    report = build_report(SCOPE, outcomes, wall_s=1.0)
    body = json.loads(report.body)
    assert body["counts"]["unchanged"] == 1
    assert body["counts"]["deny_to_allow"] == 1
    assert body["counts"]["allow_to_deny"] == 1
    assert body["not_replayable"]["payload_erased"] == 1
    assert body["deny_to_allow_by_tool"] == {"crm-update": 1}
    assert body["by"]["tenant"]["hooli"] == {"allow_to_deny": 1}
    assert body["by"]["rule"]["nexus.tools.approval"] == {"deny_to_allow": 1}
    assert body["by"]["control"]["SOC2:CC6.1"] == {"allow_to_deny": 1, "deny_to_allow": 1}
    assert body["samples"]["deny_to_allow"][0]["before"][0]["rule"] == "nexus.tools.approval"
    assert "timing" not in body
    assert report.timing.candidate_p50_ns == 20
    assert build_report(SCOPE, reversed(outcomes), wall_s=9.0).body == report.body


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def _leaf(
    payload: dict[str, Any] | None,
    status: PayloadStatus = PayloadStatus.PRESENT,
    outcome: dict[str, Any] | None = None,
) -> Any:
    entry = {"decision_id": "d-1", "tenant": "acme", "region": "eu-west-1",
             "http_path": "/v1/chat/completions", "bundles": {"nexus": "r1"},
             "outcome": outcome or {"allowed": True, "http_status": 200}}  # fmt: skip
    leaf = StoredLeaf(7, b"", orjson.dumps(entry), "decision", "d-1", None, TIME, True)
    opened = OpenedPayload(status, orjson.dumps(payload) if payload is not None else None, b"s")
    return record_of(leaf, opened)


INPUT = {"attributes": {"request": {"http": {"headers": {"authorization": "sha256:00aa"}}}},
         "nexus": {"credential_sha256": "ab" * 32}}  # fmt: skip


def test_a_fingerprinted_api_key_is_replayable_with_its_clock() -> None:
    payload = {
        "input": INPUT,
        "result": _result(True),
        "nd_builtin_cache": {"time.now_ns": {"[]": 42}},
        "masked": ["/input/attributes/request/http/headers/authorization"],
    }
    record = _leaf(payload)
    assert record.blocked is None
    assert record.now_ns == 42
    assert record.input["attributes"]["request"]["http"]["headers"]["authorization"] == (
        "Bearer sha256:00aa"
    )


def test_a_decision_routed_by_health_is_not_replayable_since_its_state_is_not_recorded() -> None:
    base = {"input": INPUT, "nd_builtin_cache": {}}
    message = 'model "gpt-4o" degraded (5xx) in region "eu-west-1" → "claude-sonnet-4"'
    took = {**_result(True), "fallback": {"rule": "nexus.models.fallback", "message": message}}
    record = _leaf({**base, "result": took})
    assert (record.blocked, record.detail) == (NotReplayable.HEALTH_ROUTED, message)
    refused = {**_result(False), "reasons": [{"rule": "nexus.routing.no_fallback"}]}
    assert _leaf({**base, "result": refused}).blocked is NotReplayable.HEALTH_ROUTED
    assert _leaf({**base, "result": _result(True)}).blocked is None


def test_a_shed_decision_is_not_replayable_since_the_policy_never_answered_it() -> None:
    payload = {"input": INPUT, "result": _result(False), "nd_builtin_cache": {}}
    shed = {"allowed": False, "http_status": 503, "shed": "overload"}
    record = _leaf(payload, outcome=shed)
    assert (record.blocked, record.detail) == (NotReplayable.SHED, "overload")
    assert _leaf(payload, PayloadStatus.ERASED, outcome=shed).blocked is NotReplayable.SHED


def test_what_replay_cannot_see_makes_a_record_not_replayable() -> None:
    base = {"input": INPUT, "result": _result(True), "nd_builtin_cache": {}}
    approval = "/input/attributes/request/http/headers/x-nexus-approval"
    assert _leaf({**base, "erased": [approval]}).blocked is NotReplayable.MASKED_FIELD
    jwt = "/nd_builtin_cache/io.jwt.decode_verify"
    assert _leaf({**base, "erased": [jwt]}).blocked is NotReplayable.MASKED_FIELD
    no_hash = {**base, "input": {"attributes": INPUT["attributes"]},
               "masked": ["/input/attributes/request/http/headers/authorization"]}  # fmt: skip
    assert _leaf(no_hash).blocked is NotReplayable.MASKED_FIELD
    assert _leaf({"input": INPUT, "result": _result(True)}).blocked is (
        NotReplayable.MISSING_ND_BUILTIN_CACHE
    )
    sent = {**base, "nd_builtin_cache": {"http.send": {}}}
    assert _leaf(sent).blocked is NotReplayable.UNREPLAYED_BUILTIN
    assert _leaf(None, PayloadStatus.ERASED).blocked is NotReplayable.PAYLOAD_ERASED
    assert _leaf(None, PayloadStatus.PURGED).blocked is NotReplayable.PAYLOAD_PURGED


def test_gates_hold_a_high_risk_deny_to_allow_and_pass_a_low_one() -> None:
    def report_for(route: str) -> Any:
        outcome = _outcome(_record(1, route=route, allowed=False), _result(False), _result(True))
        return build_report(SCOPE, [outcome], wall_s=1.0)

    risks = {"crm-update": RiskLevel.HIGH, "web-search": RiskLevel.LOW}
    gates = ReplayGates.model_validate(
        {"denyToAllowMax": 0, "minSample": 1, "notReplayableMaxFraction": 0.5}
    )
    held = judge(gates, report_for("/v1/tools/crm-update:invoke"), risks.get)
    assert not held.passed
    assert held.failed == ("deny_to_allow[risk>=high]",)
    assert judge(gates, report_for("/v1/tools/web-search:invoke"), risks.get).passed
    few = judge(
        ReplayGates.model_validate({"minSample": 5}), report_for("/v1/chat/completions"), risks.get
    )
    assert few.failed == ("min_sample",)


def test_p99_inflation_gate_reads_the_measured_times_beside_the_report() -> None:
    record = _record(1)
    report = build_report(SCOPE, [_outcome(record, _result(True), _result(True))], wall_s=1.0)
    gates = ReplayGates.model_validate({"denyToAllowMax": None, "p99InflationMax": 0.2})

    def timed(before: int | None, after: int | None) -> Timing:
        return Timing(before, before, after, after, wall_s=1.0, decisions_per_s=1.0)

    within = judge(gates, report, lambda _: None, timed(1000, 1150))
    assert within.passed and within.results[0].observed == 0.15
    inflated = judge(gates, report, lambda _: None, timed(1000, 1300))
    assert inflated.failed == ("p99_inflation",) and inflated.results[0].observed == 0.3
    unmeasured = judge(gates, report, lambda _: None, timed(None, None))
    assert unmeasured.failed == ("p99_inflation",) and unmeasured.results[0].note
    # The report's own measurements are the default; they never enter its (deterministic) body.
    assert judge(gates, report, lambda _: None).results[0].observed == 1.0
    assert b"p99" not in report.body and b"_ns" not in report.body


def test_decisions_are_counted_by_the_prompt_version_they_were_routed_to() -> None:
    """Seed §14.2: per prompt version, what the candidate does to its decisions; a record
    whose routed version moves is counted per move. The version is the policy's answer, so
    a prompt the request names but the policy routed nowhere (refused) is in no group."""

    def asking(index: int, prompt: str) -> ReplayRecord:
        http = {"headers": {"x-nexus-prompt": prompt}, "path": "/v1/chat/completions"}
        return replace(_record(index), input={"attributes": {"request": {"http": http}}})

    def routed(version: str | None) -> dict[str, Any]:
        result = _result(True)
        if version is not None:
            result["headers"] = {"x-nexus-prompt-version": version}
        return result

    outcomes = [
        _outcome(asking(1, "support-agent"), routed("3"), routed("3")),
        _outcome(asking(2, "support-agent"), routed("3"), routed("4")),
        _outcome(asking(3, "support-agent@4"), routed("4"), _result(False, "nexus.rollout")),
        _outcome(asking(4, "made-up<script>"), _result(False, "nexus.rollout"), routed(None)),
        _outcome(_record(5), _result(True), _result(True)),
    ]
    body = json.loads(build_report(SCOPE, outcomes, wall_s=1.0).body)
    assert body["by"]["prompt_version"] == {
        "support-agent@3": {"headers_changed": 1, "unchanged": 1},
        "support-agent@4": {"allow_to_deny": 1},
    }
    assert body["prompt_version_moves"] == {"support-agent@3 → support-agent@4": 1}
