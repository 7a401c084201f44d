"""Compiled data: keyed for constant-time lookups, deterministic, complete."""

from __future__ import annotations

from nexus_contract.canonical import canonical_json
from nexus_control.authoring.bundle import revision_of
from nexus_control.authoring.compiler import compile_data, slot_bound
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.policyset import resolve
from tests.conftest import BundleFactory


def compiled(root: object) -> dict[str, object]:
    return compile_data(resolve(load_bundle(root)), approval_jwks='{"keys":[]}')  # type: ignore[arg-type]


def test_grants_resolve_roles_per_tenant_and_subject(make_bundle: BundleFactory) -> None:
    data = compiled(make_bundle())
    grants = data["grants"]
    assert isinstance(grants, dict)
    support = grants["acme"]["service:support-agent"]
    # bound to two roles: agent and agent-privileged
    assert support["tools:web-search"] is True
    assert support["tools:payment-refund"] is True
    assert "subjects:erase" not in grants["acme"]["user:alice@acme.example"]
    assert grants["acme"]["user:dpo@acme.example"]["subjects:erase"] is True


def test_api_keys_are_keyed_by_hash_and_never_plain(make_bundle: BundleFactory) -> None:
    data = compiled(make_bundle())
    keys = data["api_keys"]
    assert isinstance(keys, dict)
    entry = keys["489b67a93da14f8282aa1b9c3f17a75347b9d3482480eb341350ddbd3deee173"]
    assert entry == {"tenant": "acme", "subject": "apikey:acme-prod-1"}


def test_rollout_variants_get_cumulative_slot_bounds(make_bundle: BundleFactory) -> None:
    data = compiled(make_bundle())
    flag = data["rollouts"]["models"]["chat-default"]  # type: ignore[index]
    assert flag["variants"] == [
        {"name": "gpt-4o", "weight": 50, "from": "00000000", "to": "80000000"},
        {"name": "gpt-4.1", "weight": 50, "from": "80000000", "to": "g"},
    ]
    assert flag["canary_below"] == "33333333"  # 20 % of 16^8
    assert flag["overrides"] == {"stark": "gpt-4.1"}


def test_retention_has_defaults_and_tenant_policies(make_bundle: BundleFactory) -> None:
    retention = compiled(make_bundle())["retention"]
    assert retention["*"]["chat-history"]["days"] == 365  # type: ignore[index]
    assert retention["acme"]["chat-history"] == {"days": 30, "delete": "hard", "legal_hold": False}  # type: ignore[index]
    assert retention["globex"]["chat-history"]["legal_hold"] is True  # type: ignore[index]


def test_same_sources_give_the_same_bytes_and_revision(make_bundle: BundleFactory) -> None:
    first = canonical_json(compiled(make_bundle()))
    second = canonical_json(compiled(make_bundle()))
    assert first == second
    assert revision_of({"a.rego": b"x", "data.json": first}) == revision_of(
        {"data.json": second, "a.rego": b"x"}
    )
    assert revision_of({"a.rego": b"x"}) != revision_of({"a.rego": b"y"})
    assert revision_of({"a.rego": b"x"}) != revision_of({"b.rego": b"x"})


def test_slot_bounds_order_like_the_numbers_they_stand_for() -> None:
    bounds = [slot_bound(bp) for bp in range(0, 10_001, 7)]
    assert bounds == sorted(bounds)
    assert slot_bound(0) == "00000000"
    assert slot_bound(5_000) == "80000000"
    assert slot_bound(10_000) == "g"
    assert all(len(b) == 8 for b in bounds[:-1])


def test_a_tenants_decision_log_choice_is_compiled_only_when_made(
    make_bundle: BundleFactory,
) -> None:
    root = make_bundle()
    tenants = (root / "tenants.yaml").read_text()
    marker = "    jurisdiction: eu\n"
    chosen = tenants.replace(marker, marker + "    decisionLog:\n      waitFor: write\n", 1)
    config = compiled(make_bundle(**{"tenants.yaml": chosen}))["tenants"]
    assert config["acme"]["decision_log"] == {"wait_for": "write"}  # type: ignore[index]
    assert "decision_log" not in config["globex"]  # type: ignore[operator,index]
    assert "decision_log" not in compiled(root)["tenants"]["acme"]  # type: ignore[operator,index]
