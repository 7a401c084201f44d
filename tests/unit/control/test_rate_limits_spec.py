"""The RateLimits kind: what it compiles to, and bad limits as file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from tests.conftest import BundleFactory

HEADER = "apiVersion: policy.nexus.ai/v1\nkind: RateLimits\nlimits:\n"

GOOD = HEADER + (
    "  - id: chat-shared\n"
    "    scope: shared\n"
    "    unit: minute\n"
    "    rate: 600\n"
    "    routes: [chat.completions]\n"
    "  - id: free-local\n"
    "    scope: region\n"
    "    key: credential\n"
    "    plans: [free]\n"
    "    unit: second\n"
    "    rate: 5\n"
    "    burst: 20\n"
    "  - id: acme-tpm\n"
    "    scope: shared\n"
    "    counts: tokens\n"
    "    tenants: [acme]\n"
    "    unit: minute\n"
    "    rate: 100000\n"
    "  - id: search\n"
    "    scope: region\n"
    "    tools: [web-search]\n"
    "    unit: minute\n"
    "    rate: 30\n"
)


def problems_of(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        resolve(load_bundle(root))
    return "\n".join(str(p) for p in info.value.problems)


def test_rate_limits_compile_into_bundle_data(make_bundle: BundleFactory) -> None:
    policy = resolve(load_bundle(make_bundle(**{"ratelimits.yaml": GOOD})))
    limits = compile_data(policy, "{}")["rate_limits"]
    assert sorted(limits) == ["acme-tpm", "chat-shared", "free-local", "search"]
    assert limits["free-local"] == {
        "scope": "region",
        "key": "credential",
        "counts": "requests",
        "unit": "second",
        "rate": 5,
        "burst": 20,
        "tenants": {},
        "plans": {"free": True},
        "routes": {},
        "tools": {},
    }
    # A tokens limit is a chat limit; a tools selector is a tool-call limit.
    assert limits["acme-tpm"]["routes"] == {"chat.completions": True}
    assert limits["acme-tpm"]["burst"] == 100000
    assert limits["search"]["routes"] == {"tools.invoke": True}


def test_bundle_without_rate_limits_compiles_as_before(make_bundle: BundleFactory) -> None:
    bundle = make_bundle(**{"ratelimits.yaml": None})
    assert "rate_limits" not in compile_data(resolve(load_bundle(bundle)), "{}")


def test_the_example_bundle_limits_only_the_demo_tenants_chats(
    make_bundle: BundleFactory,
) -> None:
    # The demo bursts over this limit; no other demo step's tenant or route may count in it.
    limits = compile_data(resolve(load_bundle(make_bundle())), "{}")["rate_limits"]
    assert limits == {
        "vandelay-chat": {
            "scope": "shared",
            "key": "tenant",
            "counts": "requests",
            "unit": "second",
            "rate": 5,
            "burst": 5,
            "tenants": {"vandelay": True},
            "plans": {},
            "routes": {"chat.completions": True},
            "tools": {},
        }
    }


def test_bad_rate_limits_are_file_line_errors(make_bundle: BundleFactory) -> None:
    bad = HEADER + (
        "  - id: small-bucket\n"  # 4
        "    scope: region\n"
        "    unit: minute\n"
        "    rate: 100\n"
        "    burst: 10\n"  # 8
        "  - id: ghosts\n"  # 9
        "    scope: shared\n"
        "    unit: minute\n"
        "    rate: 1\n"
        "    tenants: [acme, nobody]\n"  # 13
        "    routes: [chat.completions, v1.teleport]\n"  # 14
        "    tools: [warp-drive]\n"  # 15
        "  - id: local-tokens\n"  # 16
        "    scope: region\n"  # 17
        "    counts: tokens\n"
        "    unit: minute\n"
        "    rate: 1000\n"
        "  - id: shared-burst\n"  # 21
        "    scope: shared\n"
        "    unit: second\n"
        "    rate: 10\n"
        "    burst: 50\n"  # 25
        "  - id: bad-plan\n"  # 26
        "    scope: shared\n"
        "    unit: fortnight\n"  # 28
        "    rate: 1\n"
        "    plans: [platinum]\n"  # 30
    )
    with pytest.raises(SpecError) as info:
        load_bundle(make_bundle(**{"ratelimits.yaml": bad}))
    schema = "\n".join(str(p) for p in info.value.problems)
    assert "ratelimits.yaml:28:11: limits.4.unit:" in schema
    assert "ratelimits.yaml:30:13: limits.4.plans.0:" in schema

    text = problems_of(make_bundle(**{"ratelimits.yaml": bad.split("  - id: bad-plan")[0]}))
    assert (
        "ratelimits.yaml:8:12: rate limit 'small-bucket': burst (10) is less than rate (100)"
        in text
    )
    assert "ratelimits.yaml:13:21: rate limit 'ghosts': unknown tenant 'nobody'" in text
    assert "ratelimits.yaml:14:32: rate limit 'ghosts': unknown route 'v1.teleport'" in text
    assert "ratelimits.yaml:15:13: rate limit 'ghosts': unknown tool 'warp-drive'" in text
    assert "ratelimits.yaml:14:5: rate limit 'ghosts': tools are selected but routes" in text
    assert "ratelimits.yaml:17:12: rate limit 'local-tokens': tokens are settled" in text
    assert "ratelimits.yaml:25:12: rate limit 'shared-burst': shared limits are counted" in text


def test_duplicate_rate_limit_ids_across_files(make_bundle: BundleFactory) -> None:
    one = HEADER + "  - id: same\n    scope: shared\n    unit: minute\n    rate: 1\n"
    text = problems_of(make_bundle(**{"ratelimits-a.yaml": one, "ratelimits-b.yaml": one}))
    assert "ratelimits-b.yaml:4:9: rate limit 'same': duplicate id (first at " in text
