"""The enforcer's own Envoy routes chats to the provider clusters: real OPA + Envoy fed by a
real control plane (`tests.fixtures.provider_stack`). A chat goes to the cluster of the
provider of the model the decision routed it to; a degraded model's chats arrive at its
fallback's provider; anything else goes to the gateway upstream; a slow provider's circuit
breakers overflow with Envoy's 503 and ``x-envoy-overloaded``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from nexus_dataplane.upstream import UPSTREAM_PORT_HEADER
from tests.fixtures.environment import eventually
from tests.fixtures.provider_stack import ProviderStack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

OVERFLOWING = 6
"""Concurrent chats to self-hosted: one in flight and one pending fit its breakers."""


def served_by(answer: httpx.Response) -> str | None:
    return answer.headers.get(UPSTREAM_PORT_HEADER)


def test_a_degraded_models_chats_arrive_at_its_fallbacks_provider(
    provider_stack: ProviderStack,
) -> None:
    stack = provider_stack
    first = stack.chat("gpt-4o")
    assert first.status_code == 200, first.text
    assert served_by(first) == stack.port_of("openai")
    assert first.json()["headers"]["x-nexus-route-model"] == "gpt-4o"

    stack.report("degraded")
    try:
        # acme's plan allows claude-sonnet-4, gpt-4o's first fallback: anthropic serves it,
        # from eu-central-1 (its only endpoint in the enforcer's jurisdiction).
        eventually(
            lambda: served_by(stack.chat("gpt-4o")) == stack.port_of("anthropic"), timeout_s=10
        )
        fallen = stack.chat("gpt-4o")
        assert fallen.json()["headers"]["x-nexus-route-model"] == "claude-sonnet-4"
        assert fallen.headers["x-nexus-fallback"] == "gpt-4o->claude-sonnet-4"
    finally:
        stack.report("healthy")
    eventually(lambda: served_by(stack.chat("gpt-4o")) == stack.port_of("openai"), timeout_s=10)


def test_what_is_not_a_chat_goes_to_the_gateway_upstream(provider_stack: ProviderStack) -> None:
    stack = provider_stack
    assert stack.env.stack is not None and stack.env.stack.upstream is not None
    answer = stack.env.call(
        "acme-agent",
        "acme",
        "POST",
        "/v1/tools/web-search:invoke",
        body={"arguments": {"query": "weather"}},
    )
    assert answer.status_code == 200, answer.text
    assert served_by(answer) == str(stack.env.stack.upstream.port)


def test_a_slow_providers_circuit_breakers_overflow_with_503_overloaded(
    provider_stack: ProviderStack,
) -> None:
    stack = provider_stack
    with ThreadPoolExecutor(max_workers=OVERFLOWING) as pool:
        answers = list(pool.map(lambda _: stack.chat("llama-3.1-70b"), range(OVERFLOWING)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    overloaded = [a for a in answers if a.headers.get("x-envoy-overloaded") == "true"]
    assert overloaded, statuses
    assert all(a.status_code == 503 for a in overloaded)
    served = [a for a in answers if a.status_code == 200]
    assert served, statuses
    assert {served_by(a) for a in served} == {stack.port_of("self-hosted")}
    # Envoy counted the overflow on the provider's cluster.
    assert stack.env.stack is not None
    admin = stack.env.stack.enforcers[0].envoy_admin_url
    stats = httpx.get(f"{admin}/stats", params={"filter": "provider_self-hosted"}, timeout=5)
    overflow = {
        name.strip(): int(value)
        for name, value in (line.split(":", 1) for line in stats.text.splitlines() if ":" in line)
        if name.strip().endswith("overflow")
    }
    # Which breaker a refused request met (pending, requests, connections) depends on timing.
    assert sum(overflow.values()) >= 1, overflow
