"""Semantic diff: every widening of access is flagged."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.policyset import resolve
from tests.conftest import BundleFactory


@pytest.fixture
def base(make_bundle: BundleFactory) -> dict[str, Any]:
    return compile_data(resolve(load_bundle(make_bundle())), approval_jwks="")


def effects(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[str, str, Effect]]:
    return {(c.area, c.detail, c.effect) for c in diff_configs(old, new).changes}


def test_identical_policies_have_no_changes(base: dict[str, Any]) -> None:
    assert diff_configs(base, copy.deepcopy(base)).changes == ()


def test_granting_a_permission_widens_and_revoking_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["grants"]["acme"]["user:alice@acme.example"]["chats:delete"] = True
    del new["grants"]["globex"]["user:hank@globex.example"]["chats:read"]
    found = effects(base, new)
    assert ("grant", "granted chats:delete", Effect.WIDENS) in found
    assert ("grant", "revoked chats:read", Effect.NARROWS) in found
    assert diff_configs(base, new).needs_second_approver


def test_lowering_tool_risk_and_dropping_approval_widen(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["tools"]["payment-refund"]["risk"] = "medium"
    new["tools"]["payment-refund"]["approval_required"] = False
    found = effects(base, new)
    assert ("tool", "risk lowered: critical → medium", Effect.WIDENS) in found
    assert ("tool", "human approval no longer required", Effect.WIDENS) in found


def test_raising_a_budget_widens_and_lowering_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["tenants"]["acme"]["budget"]["monthly_cap_usd"] = 60000.0
    new["tenants"]["globex"]["budget"]["monthly_cap_usd"] = 100.0
    found = effects(base, new)
    assert ("budget", "monthly cap raised: 50000.0 → 60000.0", Effect.WIDENS) in found
    assert ("budget", "monthly cap lowered: 5000.0 → 100.0", Effect.NARROWS) in found


def test_new_api_key_widens_and_removed_key_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["api_keys"]["f" * 64] = {"tenant": "acme", "subject": "apikey:new"}
    removed = next(iter(new["api_keys"]))
    del new["api_keys"][removed]
    found = effects(base, new)
    assert ("api key", "added", Effect.WIDENS) in found
    assert ("api key", "revoked", Effect.NARROWS) in found


def test_rollout_weight_changes_are_reported_as_neutral(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    flag = new["rollouts"]["models"]["chat-default"]
    flag["variants"] = [
        {"name": "gpt-4o", "weight": 90, "from": "00000000", "to": "e6666666"},
        {"name": "gpt-4.1", "weight": 10, "from": "e6666666", "to": "g"},
    ]
    flag["kill_switch"] = True
    found = effects(base, new)
    assert (
        "rollout (model)",
        "weights gpt-4o:50/gpt-4.1:50 → gpt-4o:90/gpt-4.1:10",
        Effect.NEUTRAL,
    ) in found
    assert ("rollout (model)", "kill switch on", Effect.NEUTRAL) in found
    assert not diff_configs(base, new).widens


def test_residency_removed_and_retention_lengthened_widen(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["tenants"]["acme"]["jurisdiction"] = None
    new["retention"]["acme"]["chat-history"]["days"] = 60
    new["retention"]["globex"]["chat-history"]["legal_hold"] = False
    found = effects(base, new)
    assert ("tenant", "residency eu → any region", Effect.WIDENS) in found
    assert ("retention", "kept 30 → 60 days", Effect.WIDENS) in found
    assert ("retention", "legal hold lifted", Effect.WIDENS) in found


def test_answers_that_stop_waiting_for_the_decision_log_widen(base: dict[str, Any]) -> None:
    opted_out = copy.deepcopy(base)
    opted_out["tenants"]["acme"]["decision_log"] = {"wait_for": "none"}
    assert (
        "tenant",
        "decision log: answers enforcer default → do not wait",
        Effect.WIDENS,
    ) in effects(base, opted_out)
    insists = copy.deepcopy(base)
    insists["tenants"]["acme"]["decision_log"] = {"wait_for": "fsync"}
    assert (
        "tenant",
        "decision log: answers do not wait → wait for the fsync",
        Effect.NARROWS,
    ) in effects(opted_out, insists)
    assert not diff_configs(opted_out, insists).widens


def test_suspending_a_tenant_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["tenants"]["acme"]["status"] = "suspended"
    assert ("tenant", "status active → suspended", Effect.NARROWS) in effects(base, new)
    assert not diff_configs(base, new).widens


def test_a_changed_rego_rule_needs_a_second_approver_unless_its_package_is_exempt() -> None:
    from nexus_control.authoring.diff import BundleView, diff_bundles

    old = b"package nexus.rollout\n\ndefault allow := false\n\nallow if input.x\n"
    new = b"package nexus.rollout\n\ndefault allow := false\n\nallow if input.y\n\nextra := 1\n"
    before = BundleView({}, {"nexus/rollout.rego": old}, ("nexus", "system/log"))
    after = BundleView({}, {"nexus/rollout.rego": new}, ("nexus", "system/log"))
    plain = diff_bundles(before, after)
    (module,) = plain.modules
    assert module.rules_changed == ("allow",) and module.rules_added == ("extra",)
    assert plain.needs_second_approver and not plain.widens
    exempt = diff_bundles(before, after, exempt_packages={"nexus.rollout"})
    assert exempt.modules[0].exempt and not exempt.needs_second_approver


def test_the_log_mask_and_the_roots_are_never_exempt() -> None:
    from nexus_control.authoring.diff import BundleView, diff_bundles

    mask = b'package system.log\n\nmask contains "/input/x"\n'
    before = BundleView({}, {"system/log/mask.rego": mask}, ("nexus", "system/log"))
    after = BundleView({}, {"system/log/mask.rego": b"package system.log\n"}, ("nexus",))
    result = diff_bundles(before, after, exempt_packages={"system.log"})
    assert result.needs_second_approver
    assert not result.modules[0].exempt
    assert any(c.area == "manifest" and c.effect.value == "widens" for c in result.changes)


def test_trusting_a_new_record_signer_or_serving_before_state_widens(
    base: dict[str, Any],
) -> None:
    new = copy.deepcopy(base)
    new["record_signers"] = {
        "https://my-own-store.example": {
            "audience": "nexus-gateway",
            "tenants": {"acme": True},
            "max_ttl_s": 300,
            "jwks": '{"keys":[]}',
        }
    }
    new["tenants"]["acme"]["budget"]["before_state"] = "allow"
    found = effects(base, new)
    assert ("record signer", "added", Effect.WIDENS) in found
    assert ("budget", "before the state bundle: refuse → allow", Effect.WIDENS) in found
    assert diff_configs(base, new).needs_second_approver
