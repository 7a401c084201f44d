"""Fallbacks, providers and region priorities: good ones compile into bundle data; a
fallback outside the primary's plans or jurisdiction, a cycle, or a priority list leaving
its jurisdiction is a file:line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from tests.conftest import BundleFactory

REPO = Path(__file__).resolve().parents[3]
MODELS = (REPO / "bundles/gateway/models.yaml").read_text()
REGIONS = (REPO / "bundles/gateway/regions.yaml").read_text()
PROVIDERS = (REPO / "bundles/gateway/providers.yaml").read_text()


def problems_of(root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return [str(p) for p in info.value.problems]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_fallbacks_providers_and_priorities_compile_into_bundle_data(
    make_bundle: BundleFactory,
) -> None:
    config = compile_data(resolve(load_bundle(make_bundle())), "{}")
    assert config["models"]["gpt-4o"]["fallbacks"] == ["claude-sonnet-4", "gpt-4o-mini"]
    assert "fallbacks" not in config["models"]["gpt-4.1"]
    assert config["failover"] == {
        "eu": ["eu-west-1", "eu-central-1"],
        "us": ["us-east-1", "us-west-2"],
    }
    openai = config["providers"]["openai"]
    assert openai["outlier_detection"]["consecutive_5xx"] == 5
    assert openai["circuit_breakers"]["max_pending_requests"] == 256
    # Defaults fill what a provider leaves out.
    anthropic = config["providers"]["anthropic"]
    assert anthropic["outlier_detection"]["max_ejection_percent"] == 100
    assert anthropic["circuit_breakers"]["max_retries"] == 3


def test_a_bundle_without_providers_or_priorities_compiles_as_before(
    make_bundle: BundleFactory,
) -> None:
    regions = REGIONS[: REGIONS.index("# Where each jurisdiction")]
    config = compile_data(
        resolve(load_bundle(make_bundle(**{"providers.yaml": None, "regions.yaml": regions}))),
        "{}",
    )
    assert "providers" not in config and "failover" not in config


def test_unknown_self_duplicate_and_out_of_plan_fallbacks_are_file_line_errors(
    make_bundle: BundleFactory,
) -> None:
    models = MODELS.replace(
        "fallbacks: [claude-sonnet-4, gpt-4o-mini]",
        "fallbacks: [gpt-5, gpt-4o, gpt-4o-mini, gpt-4o-mini]",
    ).replace(
        "    plans: [enterprise]\n",
        "    plans: [enterprise]\n    fallbacks: [claude-sonnet-4]\n",
    )
    # A free-only model falling back to an enterprise-only one: no tenant could use both.
    models = models.replace(
        "  - id: llama-3.1-70b\n    provider: self-hosted\n    plans: [free, team, enterprise]\n",
        "  - id: llama-3.1-70b\n    provider: self-hosted\n    plans: [free]\n"
        "    fallbacks: [gpt-4.1]\n",
    )
    found = problems_of(make_bundle(**{"models.yaml": models}))
    fallbacks_line = line_of(models, "fallbacks: [gpt-5")
    assert any(
        f":{fallbacks_line}:" in p and "unknown fallback model 'gpt-5'" in p for p in found
    ), found
    assert any("'gpt-4o' names itself as a fallback" in p for p in found), found
    assert any("fallback 'gpt-4o-mini' is listed twice" in p for p in found), found
    llama_line = line_of(models, "fallbacks: [gpt-4.1]")
    assert any(
        f":{llama_line}:" in p and "fallback 'gpt-4.1' is in no plan that includes" in p
        for p in found
    ), found


def test_a_fallback_cycle_is_a_file_line_error(make_bundle: BundleFactory) -> None:
    models = MODELS.replace(
        "fallbacks: [claude-sonnet-4, gpt-4o-mini]", "fallbacks: [claude-sonnet-4]"
    ).replace(
        "    maxOutputTokens: 64000\n",
        "    maxOutputTokens: 64000\n    fallbacks: [gpt-4o]\n",
    )
    found = problems_of(make_bundle(**{"models.yaml": models}))
    assert any("fallback cycle" in p and "claude-sonnet-4" in p for p in found), found
    edges = {line_of(models, "fallbacks: [gpt-4o]"), line_of(models, "fallbacks: [claude")}
    assert len(found) == 1 and int(found[0].split("models.yaml:")[1].split(":")[0]) in edges


def test_a_fallback_served_in_none_of_the_primarys_jurisdictions_is_refused(
    make_bundle: BundleFactory,
) -> None:
    providers = PROVIDERS.replace(
        "      - {region: eu-central-1, host: eu-central-1.anthropic.example, port: 443}\n", ""
    )
    # anthropic now serves only the US; openai serves both, so gpt-4o → claude is still
    # allowed (they share "us"). A model served only in the EU may not fall back to it.
    providers += (
        "  - id: eu-only\n"
        "    endpoints:\n"
        "      - {region: eu-west-1, host: eu.example, port: 443}\n"
    )
    models = MODELS + (
        "  - id: eu-model\n"
        "    provider: eu-only\n"
        "    plans: [team]\n"
        "    fallbacks: [claude-sonnet-4]\n"
    )
    found = problems_of(make_bundle(**{"models.yaml": models, "providers.yaml": providers}))
    assert found == [
        p for p in found if "'eu-model': fallback 'claude-sonnet-4' is served in no" in p
    ], found
    assert f":{line_of(models, 'fallbacks: [claude-sonnet-4]')}:" in found[0]


def test_a_priority_list_naming_another_jurisdictions_region_is_a_file_line_error(
    make_bundle: BundleFactory,
) -> None:
    regions = REGIONS.replace(
        "regions: [eu-west-1, eu-central-1]", "regions: [eu-west-1, us-east-1, mars-1]"
    )
    found = problems_of(make_bundle(**{"regions.yaml": regions}))
    line = line_of(regions, "mars-1")
    assert any(
        f":{line}:" in p and "region 'us-east-1' is in jurisdiction 'us', not 'eu'" in p
        for p in found
    ), found
    assert any("unknown region 'mars-1'" in p for p in found), found


def test_a_provider_endpoint_in_an_unknown_region_and_an_unknown_provider_are_errors(
    make_bundle: BundleFactory,
) -> None:
    providers = PROVIDERS.replace("region: us-west-2,", "region: us-west-9,")
    models = MODELS.replace("provider: self-hosted", "provider: nobody")
    found = problems_of(make_bundle(**{"models.yaml": models, "providers.yaml": providers}))
    assert any(
        f":{line_of(providers, 'us-west-9')}:" in p and "unknown region 'us-west-9'" in p
        for p in found
    ), found
    assert any("unknown provider 'nobody'" in p for p in found), found


def test_a_provider_mixing_plaintext_and_tls_endpoints_is_a_file_line_error(
    make_bundle: BundleFactory,
) -> None:
    providers = PROVIDERS.replace(
        "{region: us-east-1, host: us-east-1.openai.example, port: 443}",
        "{region: us-east-1, host: us-east-1.openai.example, port: 443, tls: false}",
    )
    found = problems_of(make_bundle(**{"providers.yaml": providers}))
    line = line_of(providers, "us-east-1.openai.example")
    assert any(
        f":{line}:" in p and "'openai'" in p and "one cluster speaks one transport" in p
        for p in found
    ), found
