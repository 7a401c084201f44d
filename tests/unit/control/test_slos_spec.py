"""The SLOs kind: capabilities compile into bundle data and into Prometheus rules; bad ones
are file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nexus_contract.decision import decision_metrics
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.slo_rules import WINDOWS, render_slo_rules, slo_rules
from nexus_control.authoring.spec import MAX_CAPABILITIES
from tests.conftest import BundleFactory

REPO = Path(__file__).resolve().parents[3]
HEADER = "apiVersion: policy.nexus.ai/v1\nkind: SLOs\ncapabilities:\n"

GOOD = HEADER + (
    "  - name: chat\n"
    "    routes: [chat.completions]\n"
    "    objectives: {availability: 0.999, latency: {thresholdMs: 25, target: 0.99}}\n"
    "  - name: search\n"
    "    tools: [web-search]\n"
    "    objectives: {availability: 0.99}\n"
)


def problems_of(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return "\n".join(str(p) for p in info.value.problems)


def test_capabilities_compile_into_the_routes_and_tools_they_group(
    make_bundle: BundleFactory,
) -> None:
    policy = resolve(load_bundle(make_bundle(**{"slos.yaml": GOOD})))
    assert compile_data(policy, "{}")["capabilities"] == {
        "routes": {"chat.completions": "chat"},
        "tools": {"web-search": "search"},
    }


def test_a_bundle_without_slos_compiles_as_before(make_bundle: BundleFactory) -> None:
    assert "capabilities" not in compile_data(
        resolve(load_bundle(make_bundle(**{"slos.yaml": None}))), "{}"
    )


def test_bad_capabilities_are_file_line_errors(make_bundle: BundleFactory) -> None:
    bad = HEADER + (
        "  - name: chat\n"  # 4
        "    routes: [chat.completions, v1.teleport]\n"  # 5
        "    tools: [warp-drive]\n"  # 6
        "    objectives: {latency: {thresholdMs: 30, target: 0.99}}\n"  # 7
        "  - name: chat-again\n"  # 8
        "    routes: [chat.completions]\n"  # 9
        "    objectives: {availability: 0.99}\n"
        "  - name: nothing\n"  # 11
        "    objectives: {}\n"  # 12
        "  - name: chat\n"  # 13
        "    routes: [chats.read]\n"
        "    objectives: {availability: 0.9}\n"
    )
    text = problems_of(make_bundle(**{"slos.yaml": bad}))
    assert "slos.yaml:5:32: capability 'chat': unknown route 'v1.teleport'" in text
    assert "slos.yaml:6:13: capability 'chat': unknown tool 'warp-drive'" in text
    assert (
        "slos.yaml:7:41: capability 'chat': thresholdMs 30 is not a bucket bound of the "
        "decision latency histogram (one of 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)"
    ) in text
    assert (
        "slos.yaml:9:14: capability 'chat-again': 'chat.completions' already belongs to "
        "capability 'chat' ("
    ) in text
    assert "slos.yaml:4)\n" in text
    assert "slos.yaml:11:5: capability 'nothing': names no route and no tool" in text
    assert "slos.yaml:12:5: capability 'nothing': declares no objective" in text
    assert "slos.yaml:13:11: capability 'chat': duplicate name (first at " in text


def test_objectives_out_of_range_are_schema_errors(make_bundle: BundleFactory) -> None:
    bad = HEADER + (
        "  - name: chat\n    routes: [chat.completions]\n    objectives: {availability: 1.0}\n"  # 6
    )
    with pytest.raises(SpecError) as info:
        load_bundle(make_bundle(**{"slos.yaml": bad}))
    assert "slos.yaml:6:32: capabilities.0.objectives.availability:" in str(info.value.problems[0])


def test_the_number_of_capabilities_is_bounded(make_bundle: BundleFactory) -> None:
    many = HEADER + "".join(
        f"  - name: c{i}\n    tools: [web-search]\n    objectives: {{availability: 0.99}}\n"
        if i == 0
        else f"  - name: c{i}\n    routes: [chats.read]\n    objectives: {{availability: 0.99}}\n"
        for i in range(MAX_CAPABILITIES + 1)
    )
    assert f"more than {MAX_CAPABILITIES} capabilities" in problems_of(
        make_bundle(**{"slos.yaml": many})
    )


def test_every_objective_gets_its_ratios_over_every_window_and_a_page_and_a_ticket(
    make_bundle: BundleFactory,
) -> None:
    policy = resolve(load_bundle(make_bundle(**{"slos.yaml": GOOD})))
    groups = slo_rules(policy.capabilities)["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {
        (r["record"], r.get("labels", {}).get("capability")) for r in rules if "record" in r
    }
    for w in WINDOWS:
        assert (f"nexus:capability_error_ratio:rate{w}", None) in recorded
        assert (f"nexus:capability_slow_ratio:rate{w}", "chat") in recorded
        # search has no latency objective, so no latency rule.
        assert (f"nexus:capability_slow_ratio:rate{w}", "search") not in recorded
    alerts = [
        (r["alert"], r["labels"]["capability"], r["labels"]["severity"])
        for r in rules
        if "alert" in r
    ]
    assert sorted(alerts) == [
        ("NexusSLOAvailabilityBurn", "chat", "critical"),
        ("NexusSLOAvailabilityBurn", "chat", "warning"),
        ("NexusSLOAvailabilityBurn", "search", "critical"),
        ("NexusSLOAvailabilityBurn", "search", "warning"),
        ("NexusSLOLatencyBurn", "chat", "critical"),
        ("NexusSLOLatencyBurn", "chat", "warning"),
    ]
    page = next(
        r
        for r in rules
        if r.get("alert") == "NexusSLOAvailabilityBurn"
        and r["labels"] == {"severity": "critical", "capability": "search"}
    )
    # 14.4x and 6x the 1 % budget of a 99 % objective.
    assert "> 0.144 and" in page["expr"] and "> 0.06 and" in page["expr"]
    # The ratios read the plugin's metric names from the contract.
    assert decision_metrics().decisions_metric in " ".join(r.get("expr", "") for r in rules)


def test_the_committed_rule_file_is_what_the_gateway_bundles_slos_generate() -> None:
    committed = REPO / "deploy" / "helm" / "nexus-policy" / "files" / "slo-rules.yml"
    policy = resolve(load_bundle(REPO / "bundles" / "gateway"))
    assert committed.read_text() == render_slo_rules(policy.capabilities, "bundles/gateway"), (
        "run: nexus-policy slo-rules bundles/gateway -o "
        "deploy/helm/nexus-policy/files/slo-rules.yml"
    )
    runbooks = REPO / "deploy" / "runbooks"
    for group in yaml.safe_load(committed.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert (REPO / rule["annotations"]["runbook_url"]).is_file()
                assert (runbooks / f"{rule['alert']}.md").is_file()


def test_regrouping_a_tool_is_a_neutral_change_in_the_diff(make_bundle: BundleFactory) -> None:
    old = resolve(load_bundle(make_bundle(**{"slos.yaml": GOOD})))
    moved = GOOD.replace("    tools: [web-search]\n", "    tools: [web-search, calculator]\n")
    new = resolve(load_bundle(make_bundle(**{"slos.yaml": moved})))
    changes = diff_configs(compile_data(old, "{}"), compile_data(new, "{}")).changes
    assert [(c.area, c.subject, c.detail, c.effect) for c in changes] == [
        ("capability", "tool calculator", "none → search", Effect.NEUTRAL)
    ]
