"""Model prices, output bounds and per-request caps: validated with places, compiled, diffed."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from tests.conftest import BundleFactory

HEADER = "apiVersion: policy.nexus.ai/v1\n"

MODELS = HEADER + (
    "kind: Models\n"
    "models:\n"
    "  - id: gpt-4o\n"
    "    provider: openai\n"
    "    plans: [team, enterprise]\n"
    "    price: {inputUsdPerMtok: -1, outputUsdPerMtok: 10}\n"
    "    maxOutputTokens: 0\n"
    "  - id: gpt-4.1\n"
    "    provider: openai\n"
    "    plans: [enterprise]\n"
    "    price: {inputUsdPerToken: 2, outputUsdPerMtok: 8}\n"
    "  - id: gpt-4o-mini\n"
    "    provider: openai\n"
    "    plans: [free]\n"
    "    price: {inputUsdPerMtok: 1e9, outputUsdPerMtok: .inf}\n"
)


def load_problems(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_bundle(root)
    return "\n".join(str(p) for p in info.value.problems)


def resolve_problems(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return "\n".join(str(p) for p in info.value.problems)


def test_bad_prices_and_output_bounds_are_reported_at_their_place(
    make_bundle: BundleFactory,
) -> None:
    text = load_problems(make_bundle(**{"models.yaml": MODELS}))
    assert "models.yaml:7:30: models.0.price.inputUsdPerMtok: Input should be greater" in text
    assert "models.yaml:8:22: models.0.maxOutputTokens: Input should be greater" in text
    assert "models.yaml:12:13: models.1.price.inputUsdPerToken: unknown key" in text
    assert "models.yaml:12:5: models.1.price.inputUsdPerMtok: required key is missing" in text
    assert "models.yaml:16:30: models.2.price.inputUsdPerMtok: Input should be less" in text
    assert "models.yaml:16:53: models.2.price.outputUsdPerMtok: Input should be a finite" in text


def test_a_per_request_cap_above_the_monthly_cap_is_reported(make_bundle: BundleFactory) -> None:
    root = make_bundle()
    tenants = (root / "tenants.yaml").read_text()
    text = tenants.replace(
        "      monthlyCapUsd: 50\n", "      monthlyCapUsd: 50\n      maxRequestUsd: 75\n"
    )
    assert text != tenants
    problems = resolve_problems(make_bundle(**{"tenants.yaml": text}))
    assert re.search(
        r"tenants\.yaml:\d+:\d+: tenant 'umbrella': maxRequestUsd \(75\.0\) exceeds the monthly "
        r"cap \(50\.0\)",
        problems,
    )


def test_a_per_request_cap_must_be_positive(make_bundle: BundleFactory) -> None:
    root = make_bundle()
    tenants = (root / "tenants.yaml").read_text()
    text = tenants.replace(
        "      monthlyCapUsd: 50\n", "      monthlyCapUsd: 50\n      maxRequestUsd: 0\n"
    )
    line = text.splitlines().index("      maxRequestUsd: 0") + 1
    problems = load_problems(make_bundle(**{"tenants.yaml": text}))
    assert re.search(
        rf"tenants\.yaml:{line}:22: tenants\.3\.budget\.maxRequestUsd: .*greater", problems
    )


def compiled(root: Path) -> dict[str, Any]:
    return dict(compile_data(resolve(load_bundle(root)), approval_jwks=""))


def test_prices_and_request_caps_compile_into_the_config(make_bundle: BundleFactory) -> None:
    root = make_bundle()
    tenants = (
        (root / "tenants.yaml")
        .read_text()
        .replace(
            "      monthlyCapUsd: 50\n",
            "      monthlyCapUsd: 50\n      maxRequestUsd: 0.5\n      allowUnpricedModels: true\n",
        )
    )
    config = compiled(make_bundle(**{"tenants.yaml": tenants}))
    assert config["models"]["gpt-4o"]["price"] == {
        "input_usd_per_mtok": 2.5,
        "output_usd_per_mtok": 10.0,
    }
    assert config["models"]["gpt-4o"]["max_output_tokens"] == 16384
    umbrella = config["tenants"]["umbrella"]["budget"]
    assert umbrella["max_request_usd"] == 0.5
    assert umbrella["allow_unpriced_models"] is True
    # Unset, the optional fields are absent: the policy reads absence as "no cap", "refuse".
    assert "max_request_usd" not in config["tenants"]["acme"]["budget"]
    assert "allow_unpriced_models" not in config["tenants"]["acme"]["budget"]


@pytest.fixture
def base(make_bundle: BundleFactory) -> dict[str, Any]:
    return compiled(make_bundle())


def effects(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[str, str, Effect]]:
    return {(c.area, c.detail, c.effect) for c in diff_configs(old, new).changes}


def test_loosening_cost_controls_widens_and_tightening_narrows(base: dict[str, Any]) -> None:
    loose = copy.deepcopy(base)
    loose["tenants"]["acme"]["budget"]["allow_unpriced_models"] = True
    loose["models"]["gpt-4o"]["price"]["output_usd_per_mtok"] = 1.0
    del loose["models"]["gpt-4.1"]["price"]
    found = effects(base, loose)
    assert ("budget", "unpriced models allowed", Effect.WIDENS) in found
    widened = {c.subject for c in diff_configs(base, loose).changes if c.effect is Effect.WIDENS}
    assert {"acme", "gpt-4o", "gpt-4.1"} <= widened
    assert diff_configs(base, loose).raises_budget

    tight = copy.deepcopy(base)
    tight["tenants"]["acme"]["budget"]["max_request_usd"] = 1.0
    assert effects(base, tight) == {("budget", "per-request cap added: 1.0", Effect.NARROWS)}
    assert ("budget", "per-request cap removed (was 1.0)", Effect.WIDENS) in effects(tight, base)
