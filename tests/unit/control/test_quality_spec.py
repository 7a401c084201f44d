"""Quality thresholds in the Prompts and Rollouts specs: validated with file:line, read by no
rule but signed with the bundle (its ``quality`` section), turned into one demand per version
or model the rollout routes traffic to, and diffed so a loosened threshold widens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_control.authoring.bundle import compile_sources
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.quality import Measured, Quality, Subject, shortfalls
from nexus_control.authoring.traffic import demands_in, judge, quality_demands
from tests.conftest import BundleFactory

PROMPTS = """apiVersion: policy.nexus.ai/v1
kind: Prompts
prompts:
  - id: support-agent
    owner: team-support
    risk: medium
    defaultVersion: "3"
    quality: {minSafetyScore: 0.9, maxHallucinationRate: 0.05}
    versions:
      - version: "2"
        status: deprecated
      - version: "3"
      - version: "4"
      - version: "5"
  - id: sales-assistant
    owner: team-sales
    risk: low
    defaultVersion: "2"
    quality: {minDatasetSize: 100}
    versions:
      - version: "1"
      - version: "2"
  - id: code-reviewer
    owner: team-devex
    risk: high
    defaultVersion: "1"
    versions:
      - version: "1"
"""

ROLLOUTS = """apiVersion: policy.nexus.ai/v1
kind: Rollouts
flags:
  - id: chat-default
    target: model
    key: chat-default
    baseline: gpt-4o
    canaryPercent: 20
    quality: {maxP95LatencyMs: 900, maxCostPerCallUsd: 0.02}
    variants:
      - name: gpt-4o
        weight: 0
      - name: gpt-4.1
        weight: 100
      - name: llama-3.1-70b
        weight: 0
    overrides:
      - tenant: stark
        variant: llama-3.1-70b
  - id: chat-fast
    target: model
    key: chat-fast
    baseline: gpt-4o-mini
    canaryPercent: 10
    killSwitch: true
    quality: {maxP95LatencyMs: 400}
    variants:
      - name: llama-3.1-70b
        weight: 100
  - id: chat-all-in
    target: model
    key: chat-all-in
    baseline: gpt-4o-mini
    canaryPercent: 100
    quality: {minSafetyScore: 0.8}
    variants:
      - name: gpt-4.1
        weight: 100
  - id: support-agent-v4
    target: prompt
    key: support-agent
    baseline: "3"
    canaryPercent: 0
    variants:
      - name: "4"
        weight: 100
    overrides:
      - tenant: acme
        variant: "4"
"""


def problems_of(root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return [str(p) for p in info.value.problems]


def test_quality_blocks_change_no_rule_data_and_are_signed_beside_it(
    make_bundle: BundleFactory,
) -> None:
    files = {"prompts.yaml": PROMPTS, "rollouts.yaml": ROLLOUTS}
    gated = resolve(load_bundle(make_bundle(**files)))
    bare = PROMPTS.replace("    quality: {minSafetyScore: 0.9, maxHallucinationRate: 0.05}\n", "")
    bare = bare.replace("    quality: {minDatasetSize: 100}\n", "")
    plain = "\n".join(line for line in ROLLOUTS.splitlines() if "quality:" not in line) + "\n"
    ungated = resolve(load_bundle(make_bundle(**{"prompts.yaml": bare, "rollouts.yaml": plain})))
    assert compile_data(gated, "{}") == compile_data(ungated, "{}"), "no rule reads quality"

    sources, _, config = compile_sources(make_bundle(**files), "{}")
    assert config["quality"]["prompt:support-agent"] == {
        "kind": "prompt",
        "id": "support-agent",
        "thresholds": {"minSafetyScore": 0.9, "maxHallucinationRate": 0.05},
        "routes": {
            "3": "flag 'support-agent-v4' baseline",
            "4": "flag 'support-agent-v4' override for tenant 'acme'",
        },
    }
    assert config["quality"]["flag:chat-fast"]["routes"] == {
        "gpt-4o-mini": "flag 'chat-fast' baseline (kill switch on)"
    }
    # Approval reads back exactly what publishing demanded, without positions.
    published = sorted((d.block, d.subject, d.route, d.quality) for d in quality_demands(sources))
    signed = sorted((d.block, d.subject, d.route, d.quality) for d in demands_in(config, "rev"))
    assert signed == published
    # A comment that moves every line changes nothing signed.
    _, _, moved = compile_sources(
        make_bundle(**{"prompts.yaml": "# moved\n" + PROMPTS, "rollouts.yaml": ROLLOUTS}), "{}"
    )
    assert moved["quality"] == config["quality"]


def test_a_loosened_or_dropped_threshold_widens_and_a_stricter_one_narrows(
    make_bundle: BundleFactory,
) -> None:
    def config_of(prompts: str) -> dict[str, object]:
        _, _, config = compile_sources(
            make_bundle(**{"prompts.yaml": prompts, "rollouts.yaml": ROLLOUTS}), "{}"
        )
        return dict(config)

    base = config_of(PROMPTS)
    cases = {
        "minSafetyScore: 0.9, maxHallucinationRate: 0.05": None,
        "minSafetyScore: 0.8, maxHallucinationRate: 0.05": ("minSafetyScore 0.9 → 0.8", "widens"),
        "minSafetyScore: 0.95, maxHallucinationRate: 0.05": (
            "minSafetyScore 0.9 → 0.95",
            "narrows",
        ),
        "minSafetyScore: 0.9, maxHallucinationRate: 0.2": (
            "maxHallucinationRate 0.05 → 0.2",
            "widens",
        ),
        "minSafetyScore: 0.9": ("maxHallucinationRate 0.05 → none", "widens"),
        "minSafetyScore: 0.9, maxHallucinationRate: 0.05, minDatasetSize: 50": (
            "minDatasetSize none → 50",
            "narrows",
        ),
    }
    for block, expected in cases.items():
        changed = PROMPTS.replace("minSafetyScore: 0.9, maxHallucinationRate: 0.05", block)
        diff = diff_configs(base, config_of(changed))  # type: ignore[arg-type]
        found = [(c.detail, c.effect.value) for c in diff.changes if c.area == "quality"]
        assert found == ([] if expected is None else [expected]), block
        assert diff.needs_second_approver == (expected is not None and expected[1] == "widens")
    dropped = PROMPTS.replace(
        "    quality: {minSafetyScore: 0.9, maxHallucinationRate: 0.05}\n", ""
    )
    diff = diff_configs(base, config_of(dropped))  # type: ignore[arg-type]
    assert {(c.subject, c.effect) for c in diff.changes if c.area == "quality"} == {
        ("prompt:support-agent", Effect.WIDENS)
    }


def test_bad_quality_blocks_are_file_line_errors(make_bundle: BundleFactory) -> None:
    prompts = PROMPTS.replace(
        "quality: {minSafetyScore: 0.9, maxHallucinationRate: 0.05}",
        "quality: {minSafetyScore: 1.5, maxHallucinationRate: 0.05, minBleu: 3}",
    ).replace("quality: {minDatasetSize: 100}", "quality: {}")
    problems = problems_of(make_bundle(**{"prompts.yaml": prompts}))
    assert any(":8:" in p and "minSafetyScore: Input should be less than or equal to 1" in p
               for p in problems), problems  # fmt: skip
    assert any(":8:" in p and "minBleu: unknown key" in p for p in problems), problems
    assert any(":19:" in p and "at least one threshold" in p for p in problems), problems

    rollouts = ROLLOUTS.replace("maxP95LatencyMs: 400", "maxP95LatencyMs: -1")
    problems = problems_of(make_bundle(**{"prompts.yaml": PROMPTS, "rollouts.yaml": rollouts}))
    assert any(":26:" in p and "maxP95LatencyMs: Input should be greater than 0" in p
               for p in problems), problems  # fmt: skip

    on_prompt_flag = ROLLOUTS.replace(
        "    canaryPercent: 0\n", "    canaryPercent: 0\n    quality: {minSafetyScore: 0.5}\n"
    )
    problems = problems_of(
        make_bundle(**{"prompts.yaml": PROMPTS, "rollouts.yaml": on_prompt_flag})
    )
    assert problems == [
        problems[0].split(":")[0] + ":44:5: flag 'support-agent-v4': a prompt's quality "
        "thresholds are declared on the prompt in its Prompts spec (prompt 'support-agent'), "
        "not on its flag"
    ]


def _demands(make_bundle: BundleFactory) -> list[tuple[Subject, str, int]]:
    root = make_bundle(**{"prompts.yaml": PROMPTS, "rollouts.yaml": ROLLOUTS})
    sources = load_bundle(root)
    resolve(sources)
    return [(d.subject, d.route, d.line) for d in quality_demands(sources)]


def test_only_what_receives_traffic_is_demanded(make_bundle: BundleFactory) -> None:
    assert _demands(make_bundle) == [
        # support-agent: a 0 % canary serves the override's version and the baseline, not
        # version 4's weight, nor version 5 (pinned only), nor the default the flag replaces.
        (Subject("prompt", "support-agent", "4"),
         "flag 'support-agent-v4' override for tenant 'acme'", 49),
        (Subject("prompt", "support-agent", "3"), "flag 'support-agent-v4' baseline", 42),
        # sales-assistant has no flag: its defaultVersion; code-reviewer declares nothing.
        (Subject("prompt", "sales-assistant", "2"), "prompt 'sales-assistant' defaultVersion",
         18),
        # chat-default: the canary's variant, the override's model, and gpt-4o only as the
        # baseline (its variant weighs 0).
        (Subject("model", "gpt-4.1"),
         "flag 'chat-default' variant 'gpt-4.1' (100 % of its canary)", 13),
        (Subject("model", "llama-3.1-70b"), "flag 'chat-default' override for tenant 'stark'",
         19),
        (Subject("model", "gpt-4o"), "flag 'chat-default' baseline", 7),
        # chat-fast: the kill switch serves only the baseline, not its 100 % variant.
        (Subject("model", "gpt-4o-mini"), "flag 'chat-fast' baseline (kill switch on)", 23),
        # chat-all-in: a 100 % canary leaves its baseline nobody.
        (Subject("model", "gpt-4.1"),
         "flag 'chat-all-in' variant 'gpt-4.1' (100 % of its canary)", 37),
    ]  # fmt: skip


def test_a_model_two_flags_route_to_is_demanded_by_each(make_bundle: BundleFactory) -> None:
    root = make_bundle(**{"prompts.yaml": PROMPTS, "rollouts.yaml": ROLLOUTS})
    sources = load_bundle(root)
    resolve(sources)
    gpt41 = [d for d in quality_demands(sources) if d.subject == Subject("model", "gpt-4.1")]
    assert [d.route.split()[1] for d in gpt41] == ["'chat-default'", "'chat-all-in'"]
    assert [d.quality.min_safety_score for d in gpt41] == [None, 0.8]


def _measured(**changes: float) -> Measured:
    values: dict[str, float] = {
        "safety_score": 0.95,
        "hallucination_rate": 0.01,
        "p95_latency_ms": 300,
        "cost_per_call_usd": 0.01,
        "dataset_size": 500,
    }
    values.update(changes)
    return Measured(
        safety_score=values["safety_score"],
        hallucination_rate=values["hallucination_rate"],
        p95_latency_ms=values["p95_latency_ms"],
        cost_per_call_usd=values["cost_per_call_usd"],
        dataset_id="golden-set",
        dataset_size=int(values["dataset_size"]),
        evaluated_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_shortfalls_name_every_declared_threshold_missed_and_only_those() -> None:
    strict = Quality.model_validate(
        {"minSafetyScore": 0.9, "maxHallucinationRate": 0.02, "minDatasetSize": 1000}
    )
    assert shortfalls(strict, _measured(safety_score=0.9, hallucination_rate=0.02,
                                        dataset_size=1000)) == []  # fmt: skip
    assert shortfalls(strict, _measured(safety_score=0.5, p95_latency_ms=99_999)) == [
        "minSafetyScore 0.9: measured 0.5",
        "minDatasetSize 1000: measured 500",
    ]


def test_judge_places_each_unmet_demand_at_its_route(make_bundle: BundleFactory) -> None:
    root = make_bundle(**{"prompts.yaml": PROMPTS, "rollouts.yaml": ROLLOUTS})
    sources = load_bundle(root)
    resolve(sources)
    demands = quality_demands(sources)
    stored = {
        Subject("model", "gpt-4.1"): _measured(p95_latency_ms=1200),
        Subject("prompt", "sales-assistant", "2"): _measured(dataset_size=10),
    }
    problems = {p.line: p for p in judge(demands, stored.get)}
    assert "which has no evaluation" in problems[7].message  # gpt-4o, the baseline
    assert problems[7].file.endswith("rollouts.yaml")
    assert "fails maxP95LatencyMs 900: measured 1200" in problems[13].message
    assert "fails minSafetyScore 0.8" not in problems[13].message
    assert "fails minDatasetSize 100: measured 10" in problems[18].message
    assert problems[18].file.endswith("prompts.yaml")
    passing = dict.fromkeys((d.subject for d in demands), _measured())
    assert judge(demands, passing.get) == []
