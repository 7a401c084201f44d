"""The chart's enforcer NetworkPolicy lets Envoy reach the LLM providers only when the gateway
says where they are (``providerPeers``): with provider routes in its Envoy config
(`dataplane render` with NEXUS_DATAPLANE_PROVIDERS_BUNDLE) chats leave for the providers'
endpoints, without them Envoy's egress is the upstream alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gotools import pinned_tool
from tests.integration.deploy.test_helm_chart import objects, render

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def helm() -> Path:
    return pinned_tool("helm")


def enforcer_egress(helm: Path, *args: str) -> list[dict[str, Any]]:
    manifest = render(helm, "--set", "enforcerExample.enabled=true", *args)
    (policy,) = [
        o
        for o in objects(manifest)
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("gw-eu-1")
    ]
    egress: list[dict[str, Any]] = policy["spec"]["egress"]
    return egress


def test_without_provider_peers_no_egress_reaches_port_443(helm: Path) -> None:
    ports = [p["port"] for rule in enforcer_egress(helm) for p in rule["ports"]]
    assert 443 not in ports


def test_provider_peers_open_egress_to_the_providers_on_443(helm: Path) -> None:
    egress = enforcer_egress(
        helm, "--set", "enforcerExample.providerPeers[0].ipBlock.cidr=203.0.113.0/24"
    )
    rule = egress[-1]
    assert rule["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
