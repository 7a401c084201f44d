"""Attack: a client sends its own ``x-nexus-route-model`` to pick the provider its chat goes
to (a costlier one, or one its plan does not allow). Envoy strips the header before
ext_authz and routes on the decision's value only, chosen again after ext_authz
(`tests.fixtures.provider_stack`: real OPA + Envoy, one upstream per provider)."""

from __future__ import annotations

import pytest

from nexus_dataplane.upstream import UPSTREAM_PORT_HEADER
from tests.fixtures.provider_stack import ProviderStack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CLAIMED = {"x-nexus-route-model": "claude-sonnet-4"}
"""anthropic's model: what the attacker wants its chat sent to."""


def test_a_clients_route_model_header_does_not_choose_the_provider(
    provider_stack: ProviderStack,
) -> None:
    stack = provider_stack
    answer = stack.chat("gpt-4o", **CLAIMED)
    assert answer.status_code == 200, answer.text
    assert answer.headers[UPSTREAM_PORT_HEADER] == stack.port_of("openai")
    assert answer.json()["headers"]["x-nexus-route-model"] == "gpt-4o"


def test_a_tenant_cannot_reach_a_model_outside_its_plan_by_header(
    provider_stack: ProviderStack,
) -> None:
    stack = provider_stack
    # umbrella is on the free plan: claude-sonnet-4 is not in it.
    answer = stack.chat("gpt-4o-mini", key="umbrella-chat", tenant="umbrella", **CLAIMED)
    assert answer.status_code == 200, answer.text
    assert answer.headers[UPSTREAM_PORT_HEADER] == stack.port_of("openai")
    assert answer.json()["headers"]["x-nexus-route-model"] == "gpt-4o-mini"
    refused = stack.chat("claude-sonnet-4", key="umbrella-chat", tenant="umbrella", **CLAIMED)
    assert refused.status_code == 403
    assert UPSTREAM_PORT_HEADER not in refused.headers


def test_a_route_model_header_on_another_route_reaches_no_provider(
    provider_stack: ProviderStack,
) -> None:
    stack = provider_stack
    assert stack.env.stack is not None and stack.env.stack.upstream is not None
    answer = stack.env.call(
        "acme-agent",
        "acme",
        "POST",
        "/v1/tools/web-search:invoke",
        headers=CLAIMED,
        body={"arguments": {"query": "weather"}},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers[UPSTREAM_PORT_HEADER] == str(stack.env.stack.upstream.port)
    assert "x-nexus-route-model" not in answer.json()["headers"]
