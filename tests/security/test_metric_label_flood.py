"""Attack: flood an enforcer's metrics with series by sending requests no bundle names.

A client cannot choose a Prometheus label: every value of `nexus_decisions_total`'s labels
comes from the bundle (the route, a tool the bundle defines, a capability of its SLOs), so
a thousand made-up tool ids and paths through a real Envoy and our plugin in a real OPA
add no series, and each request is still counted — as the `unknown` tool, or no route. A
scrape's size is what the bundle says, not what the clients send. The same run checks that
the real gateway policy labels its decisions by capability as `bundles/gateway/slos.yaml`
groups them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexus_contract.decision import decision_metrics
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.gateway_stack import GatewayStack, gateway_stack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

FLOOD = 300


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[GatewayStack]:
    workdir = tmp_path_factory.mktemp("label-flood")
    with gateway_stack(workdir, opa, session_keys, signing_public_pem) as running:
        yield running


def decision_series(stack: GatewayStack) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{stack.opa.url}/metrics", headers=stack.opa.api_headers, timeout=10).text
    name = decision_metrics().decisions_metric.removesuffix("_total")
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_made_up_tools_and_paths_add_no_series(stack: GatewayStack) -> None:
    agent = {"x-nexus-tenant": "acme"}
    stack.send("POST", "/v1/tools/calculator:invoke", key="acme-agent", headers=agent,
               body=b'{"arguments": {"expression": "1+1"}}')  # fmt: skip
    before = decision_series(stack)

    made_up = [secrets.token_hex(6) for _ in range(FLOOD)]
    for i, word in enumerate(made_up):
        if i % 2:
            answer = stack.send("POST", f"/v1/tools/{word}:invoke", key="acme-agent",
                                headers=agent, body=b'{"arguments": {}}')  # fmt: skip
        else:
            answer = stack.send("GET", f"/v1/{word}/{word}", key="acme-agent", headers=agent)
        assert answer.status in (400, 403, 404), answer.body

    after = decision_series(stack)
    labels_seen = {value for series in after for _, value in series}
    assert not labels_seen & set(made_up), "a client's value became a label"
    assert len(after) <= len(before) + 4, sorted(after)

    def count(**labels: str) -> float:
        return sum(v for series, v in after.items() if labels.items() <= dict(series).items())

    assert count(route="tools.invoke", tool="unknown") >= FLOOD // 2
    assert count(route="none", tool="none", capability="none") >= FLOOD // 2


def test_the_gateway_policy_labels_decisions_by_the_bundles_capabilities(
    stack: GatewayStack,
) -> None:
    agent = {"x-nexus-tenant": "acme"}
    stack.send("POST", "/v1/tools/web-search:invoke", key="acme-agent", headers=agent,
               body=b'{"arguments": {"query": "opa"}}')  # fmt: skip
    stack.send("POST", "/v1/tools/db-write:invoke", key="acme-agent", headers=agent,
               body=b'{"arguments": {}}')  # fmt: skip
    series = {dict(s)["tool"]: dict(s) for s in decision_series(stack)}
    # slos.yaml: web-search is an agent tool; db-write falls to its route's capability.
    assert series["web-search"]["capability"] == "agent-tools"
    assert series["db-write"]["capability"] == "approved-tools"
    assert series["db-write"]["route"] == "tools.invoke"
