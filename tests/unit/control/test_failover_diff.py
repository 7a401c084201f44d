"""Semantic diff of failover: a fallback added, a region added to a jurisdiction's priority
list, or an Envoy guard loosened or removed widens; the reverse narrows."""

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
    return dict(compile_data(resolve(load_bundle(make_bundle())), approval_jwks=""))


def effects(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[str, str, str, Effect]]:
    return {(c.area, c.subject, c.detail, c.effect) for c in diff_configs(old, new).changes}  # type: ignore[arg-type]


def test_adding_a_fallback_widens_and_removing_one_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["models"]["gpt-4.1"]["fallbacks"] = ["gpt-4o"]
    assert effects(base, new) == {("fallback", "gpt-4.1", "may fall back to gpt-4o", Effect.WIDENS)}
    assert effects(new, base) == {
        ("fallback", "gpt-4.1", "no longer falls back to gpt-4o", Effect.NARROWS)
    }


def test_reordering_fallbacks_is_neutral(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["models"]["gpt-4o"]["fallbacks"] = ["gpt-4o-mini", "claude-sonnet-4"]
    assert {e for *_, e in effects(base, new)} == {Effect.NEUTRAL}


def test_a_region_added_to_a_jurisdictions_priorities_widens(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    new["failover"]["eu"] = ["eu-west-1"]
    assert effects(new, base) == {
        ("failover", "eu", "may fail over to eu-central-1", Effect.WIDENS)
    }


def test_removing_outlier_detection_or_loosening_a_breaker_widens(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    del new["providers"]["openai"]["outlier_detection"]["consecutive_5xx"]
    new["providers"]["openai"]["circuit_breakers"]["max_requests"] = 4096
    new["providers"]["anthropic"]["outlier_detection"]["base_ejection_time_ms"] = 1000
    found = effects(base, new)
    assert (
        "provider",
        "openai",
        "outlier_detection.consecutive_5xx 5 → None",
        Effect.WIDENS,
    ) in found
    assert (
        "provider",
        "openai",
        "circuit_breakers.max_requests 1024 → 4096",
        Effect.WIDENS,
    ) in found
    assert (
        "provider",
        "anthropic",
        "outlier_detection.base_ejection_time_ms 30000 → 1000",
        Effect.WIDENS,
    ) in found
    assert diff_configs(base, new).widens  # type: ignore[arg-type]
    tightened = effects(new, base)
    assert (
        "provider",
        "openai",
        "circuit_breakers.max_requests 4096 → 1024",
        Effect.NARROWS,
    ) in tightened


def test_turning_an_endpoints_tls_off_widens_and_on_narrows(base: dict[str, Any]) -> None:
    new = copy.deepcopy(base)
    for endpoint in new["providers"]["anthropic"]["endpoints"]:
        endpoint["tls"] = False
    detail = "endpoint eu-central-1.anthropic.example:443 in eu-central-1: TLS turned off"
    assert ("provider", "anthropic", detail, Effect.WIDENS) in effects(base, new)
    assert diff_configs(base, new).needs_second_approver  # type: ignore[arg-type]
    back = detail.replace("off", "on")
    assert ("provider", "anthropic", back, Effect.NARROWS) in effects(new, base)
