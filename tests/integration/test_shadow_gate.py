"""The shadow gate: a rollout enters its next wave only when that wave's shadow outcomes pass,
and its report counts them in the replay report's buckets."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from nexus_audit.events import controls_for
from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_runtime.keys.jws import verify_compact
from tests.fixtures.shadow_gate import CANARY, Flow, auth, eventually, shadow_gated, variant

pytestmark = pytest.mark.opa


@pytest.fixture
def flow(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[Flow]:
    with shadow_gated(tmp_path, session_keys, opa) as flow:
        yield flow


def test_a_widening_shadow_holds_promotion_until_an_approver_overrides_it(
    flow: Flow, tmp_path: Path
) -> None:
    candidate, rollout_id = flow.publish(variant(tmp_path, "widened", "high"))
    flow.candidate = candidate
    flow.shadow(candidate)
    flow.report_active(CANARY, candidate)
    eventually(lambda: "shadow gate failed" in (flow.rollout(rollout_id)["reason"] or ""))
    assert "no shadow outcome logged yet" in flow.rollout(rollout_id)["reason"]

    flow.traffic(
        ("d-1", "unchanged", False, None),
        ("d-2", "unchanged", True, None),
        ("d-3", "deny_to_allow", False, "file-delete"),
    )
    report = flow.report()
    body = orjson.loads(report["report"])
    assert body["kind"] == "shadow_report"
    assert body["counts"]["deny_to_allow"] == 1 and body["counts"]["unchanged"] == 2
    assert body["deny_to_allow_by_tool"] == {"file-delete": 1}
    assert body["samples"]["deny_to_allow"][0]["decision_id"] == "d-3"
    assert report["gates_passed"] is False
    failed = {g["gate"] for g in report["gates"] if not g["passed"]}
    assert failed == {"deny_to_allow[risk>=high]"}

    eventually(lambda: "deny_to_allow[risk>=high]" in (flow.rollout(rollout_id)["reason"] or ""))
    status = flow.rollout(rollout_id)
    assert status["state"] == "rolling" and status["wave"] == 0, "held in the canary wave"

    promoted = flow.client.post(
        f"/v1/rollouts/{rollout_id}/promote", json={}, headers=auth(flow.tokens["operator"])
    )
    assert promoted.status_code == 409, promoted.text
    assert promoted.json()["error"]["code"] == "shadow_gate_held"
    assert flow.rollout(rollout_id)["wave"] == 0

    override = flow.client.post(
        f"/v1/rollouts/{rollout_id}/override",
        json={"reason": "file-delete is wanted for acme from today"},
        headers=auth(flow.tokens["approver"]),
    )
    assert override.status_code == 200, override.text
    assert flow.rollout(rollout_id)["wave"] == 1
    verdicts = [v for v in flow.events("shadow.gate_verdict") if v["rollout"] == rollout_id]
    assert verdicts and all(v["passed"] is False for v in verdicts)
    assert len(verdicts) == len({v["detail"] for v in verdicts}), "one event per verdict"
    overrides = flow.events("shadow.gate_overridden")
    assert [o["reason"] for o in overrides] == ["file-delete is wanted for acme from today"]


def test_a_benign_shadow_passes_its_gate_and_the_rollout_enters_the_next_wave(
    flow: Flow, tmp_path: Path
) -> None:
    candidate, rollout_id = flow.publish(variant(tmp_path, "benign", "medium"))
    flow.candidate = candidate
    flow.shadow(candidate)
    flow.traffic(
        ("d-1", "unchanged", False, None),
        ("d-2", "unchanged", True, None),
        ("d-3", "unchanged", False, "file-delete"),
    )
    flow.report_active(CANARY, candidate)
    eventually(lambda: flow.rollout(rollout_id)["wave"] == 1)
    assert flow.report()["gates_passed"] is True
    verdicts = flow.events("shadow.gate_verdict")
    assert [v["passed"] for v in verdicts if v["rollout"] == rollout_id] == [True]
    # The report the passing verdict was made on is signed beside it, by the bundle key.
    (passed,) = [v for v in verdicts if v["rollout"] == rollout_id]
    sealed = [r for r in flow.events("shadow.reported") if r["digest"] in passed["digests"]]
    assert sealed and all(r["rollout"] == rollout_id and r["total"] == 3 for r in sealed)
    keys = flow.plane.keyring.trusted_for_verification(KeyPurpose.BUNDLE)
    for report in sealed:
        _, body = verify_compact(report["signature"], keys)
        assert "sha256:" + hashlib.sha256(body).hexdigest() == report["digest"]
    assert set(controls_for("shadow.reported")) >= {"SOC2:CC8.1", "ISO27001:A.8.32"}
