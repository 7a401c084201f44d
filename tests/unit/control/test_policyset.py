"""Cross-reference checks: unknown ids, duplicates, overlaps, weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.spec import RiskLevel
from tests.conftest import BundleFactory

HEADER = "apiVersion: policy.nexus.ai/v1\n"


def problems_of(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return "\n".join(str(p) for p in info.value.problems)


def test_example_bundle_is_consistent(make_bundle: BundleFactory) -> None:
    policy = resolve(load_bundle(make_bundle()))
    assert len(policy.tenants) >= 5
    assert len({t.jurisdiction for t in policy.tenants.values() if t.jurisdiction}) >= 2
    assert len(policy.tools) >= 10
    assert {t.risk.value for t in policy.tools.values()} == {"low", "medium", "high", "critical"}
    assert len(policy.flags) >= 2
    assert len(policy.roles) >= 3


def test_unknown_references_are_reported_with_places(make_bundle: BundleFactory) -> None:
    rbac = HEADER + (
        "kind: RBAC\n"
        "roles:\n"
        "  - id: r1\n"
        "    permissions: [chat:completions, tools:teleport]\n"
        "bindings:\n"
        "  - tenant: nobody\n"
        "    role: r1\n"
        "    users: [x@y.example]\n"
        "  - tenant: acme\n"
        "    role: ghost\n"
        "    users: [x@y.example]\n"
    )
    text = problems_of(make_bundle(**{"rbac.yaml": rbac}))
    assert "rbac.yaml:5:37: role 'r1': unknown permission 'tools:teleport'" in text
    assert "rbac.yaml:7:13: unknown tenant 'nobody'" in text
    assert "rbac.yaml:11:11: unknown role 'ghost'" in text


def test_duplicate_ids_across_files(make_bundle: BundleFactory) -> None:
    extra = HEADER + (
        "kind: Tools\ntools:\n"
        "  - id: web-search\n    risk: low\n    permission: tools:web-search\n"
        "    arguments: {type: object}\n"
    )
    text = problems_of(make_bundle(**{"tools-extra.yaml": extra}))
    assert "tools.yaml:7:9: duplicate tool id 'web-search' (first at " in text
    assert "tools-extra.yaml:4)" in text


def test_overlapping_bindings_and_conflicting_keys(make_bundle: BundleFactory) -> None:
    hash_a = "a" * 64
    rbac = HEADER + (
        "kind: RBAC\n"
        "roles:\n"
        "  - id: r1\n"
        "    permissions: [chat:completions]\n"
        "bindings:\n"
        "  - tenant: acme\n    role: r1\n    users: [x@acme.example]\n"
        "  - tenant: acme\n    role: r1\n    users: [x@acme.example]\n"
        f"  - tenant: acme\n    role: r1\n    apiKeys:\n      - id: k1\n        sha256: {hash_a}\n"
        "  - tenant: globex\n    role: r1\n    apiKeys:\n"
        f"      - id: k2\n        sha256: {hash_a}\n"
    )
    text = problems_of(make_bundle(**{"rbac.yaml": rbac}))
    assert "overlapping binding: user:x@acme.example already has role 'r1'" in text
    assert "API key 'k2' conflicts with key 'k1' of tenant 'acme'" in text


def test_rollout_weights_must_sum_to_100(make_bundle: BundleFactory) -> None:
    flags = HEADER + (
        "kind: Rollouts\nflags:\n"
        "  - id: f1\n    target: model\n    key: chat-default\n    baseline: gpt-4o\n"
        "    variants:\n      - name: gpt-4o\n        weight: 60\n"
        "      - name: gpt-9\n        weight: 30\n"
        "    overrides:\n      - tenant: nobody\n        variant: gpt-4o\n"
    )
    text = problems_of(make_bundle(**{"rollouts.yaml": flags}))
    assert "rollouts.yaml:8:5: flag 'f1': variant weights sum to 90, not 100" in text
    assert "flag 'f1': variant 'gpt-9' is not a known model" in text
    assert "flag 'f1': unknown tenant 'nobody'" in text


def test_prompt_rollout_needs_live_versions(make_bundle: BundleFactory) -> None:
    flags = HEADER + (
        "kind: Rollouts\nflags:\n"
        '  - id: f1\n    target: prompt\n    key: support-agent\n    baseline: "1"\n'
        '    variants:\n      - name: "3"\n        weight: 100\n'
    )
    text = problems_of(make_bundle(**{"rollouts.yaml": flags}))
    assert "baseline '1' is not a live version of prompt 'support-agent'" in text


def test_high_risk_tool_cannot_skip_approval_and_schema_must_be_valid(
    make_bundle: BundleFactory,
) -> None:
    tools = HEADER + (
        "kind: Tools\ntools:\n"
        "  - id: nuke\n    risk: critical\n    permission: tools:nuke\n"
        "    requiresApproval: false\n    arguments: {type: object}\n"
        "  - id: broken\n    risk: low\n    permission: tools:broken\n"
        "    arguments: {type: objekt}\n"
    )
    rbac = HEADER + "kind: RBAC\nroles:\n  - id: r\n    permissions: [chat:completions]\n"
    text = problems_of(make_bundle(**{"tools.yaml": tools, "rbac.yaml": rbac}))
    assert "tool 'nuke': critical risk tools always need a human approval" in text
    assert "tool 'broken': arguments is not a valid JSON Schema" in text


def test_retention_classes_need_defaults_and_known_tenants(make_bundle: BundleFactory) -> None:
    retention = HEADER + (
        "kind: Retention\ndataClasses:\n  - id: chat-history\n  - id: orphan\n"
        "defaults:\n  - dataClass: chat-history\n    days: 30\n"
        "policies:\n  - tenant: nobody\n    dataClass: chat-history\n    days: 10\n"
    )
    text = problems_of(make_bundle(**{"retention.yaml": retention}))
    assert "data class 'orphan' has no default retention" in text
    assert "unknown tenant 'nobody'" in text


def test_tenant_jurisdiction_needs_a_region_and_caps_stay_under_the_total(
    make_bundle: BundleFactory,
) -> None:
    tenants = HEADER + (
        "kind: Tenants\ntenants:\n"
        "  - id: acme\n    name: Acme\n    plan: team\n    jurisdiction: mars\n"
        "    budget:\n      monthlyCapUsd: 100\n      perModel:\n        gpt-4o: 500\n"
        "        gpt-9: 10\n"
    )
    text = problems_of(make_bundle(**{"tenants.yaml": tenants}))
    assert "no region has jurisdiction 'mars'" in text
    assert "perModel cap for 'gpt-4o' (500.0) exceeds the monthly cap (100.0)" in text
    assert "unknown model 'gpt-9' in perModel" in text


def test_issuer_tenants_must_exist_and_jwks_must_be_public(make_bundle: BundleFactory) -> None:
    identity = HEADER + (
        "kind: Identity\nissuers:\n"
        "  - issuer: https://idp.example\n    audience: gw\n    tenants: [acme, ghost]\n"
        "    jwks: {keys: [{kty: EC, crv: P-256, x: a, y: b, d: secret}]}\n"
    )
    text = problems_of(make_bundle(**{"identity.yaml": identity}))
    assert "identity.yaml:6:21: unknown tenant 'ghost'" in text
    assert "contains private or symmetric key material" in text


def test_approval_lifetimes_default_per_risk_level(make_bundle: BundleFactory) -> None:
    policy = resolve(load_bundle(make_bundle()))
    assert {r.value: s for r, s in policy.approval_ttl_s.items()} == {
        "low": 3600,
        "medium": 3600,
        "high": 1800,
        "critical": 900,
    }


def test_approval_lifetimes_are_set_once_and_bounded(make_bundle: BundleFactory) -> None:
    tools = HEADER + (
        "kind: Tools\napprovalTtlSeconds: {critical: 300}\ntools:\n"
        "  - id: teleport\n    risk: low\n    permission: tools:web-search\n"
        "    arguments: {type: object}\n"
    )
    policy = resolve(load_bundle(make_bundle(**{"tools-extra.yaml": tools})))
    assert policy.approval_ttl_s[RiskLevel.CRITICAL] == 300
    assert policy.approval_ttl_s[RiskLevel.HIGH] == 1800
    again = tools.replace("teleport", "beam")
    text = problems_of(make_bundle(**{"tools-extra.yaml": tools, "tools-more.yaml": again}))
    assert "approvalTtlSeconds is set in two Tools documents (first at " in text
    with pytest.raises(SpecError) as info:
        load_bundle(make_bundle(**{"tools-extra.yaml": tools.replace("300", "86400")}))
    assert (
        "tools-extra.yaml:3:32: approvalTtlSeconds.critical: Input should be less than or equal "
        "to 3600" in "\n".join(str(p) for p in info.value.problems)
    )
