"""Provider clusters through a real Envoy: an endpoint answering 5xx is ejected by outlier
detection and the provider's traffic moves to the next region of the enforcer's
jurisdiction, never to another jurisdiction's endpoint; the circuit breakers and the
guards are the spec's."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_dataplane.envoy import EnvoyProxy, validate_envoy_config
from nexus_dataplane.process import free_port
from nexus_dataplane.providers import provider_clusters
from nexus_dataplane.upstream import UPSTREAM_PORT_HEADER, Upstream
from nexus_runtime.toolchain import find_envoy
from tests.conftest import BundleFactory

pytestmark = pytest.mark.envoy

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
CONSECUTIVE_5XX = 3


@pytest.fixture
def config(make_bundle: BundleFactory) -> dict[str, Any]:
    return dict(compile_data(resolve(load_bundle(make_bundle())), "{}"))


def bootstrap(clusters: list[dict[str, Any]], port: int, admin_port: int) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "provider_openai", "timeout": "5s"}}
    manager = {
        "@type": HCM_TYPE,
        "stat_prefix": "providers",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
        ],
    }
    listener = {
        "name": "providers",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[dict[str, Upstream]]:
    started = {
        "eu-west-1": Upstream(tmp_path / "eu-west-1", name="eu-west-1", status=503),
        "eu-central-1": Upstream(tmp_path / "eu-central-1", name="eu-central-1"),
        "us-east-1": Upstream(tmp_path / "us-east-1", name="us-east-1"),
        "us-west-2": Upstream(tmp_path / "us-west-2", name="us-west-2"),
    }
    try:
        for upstream in started.values():
            upstream.start_and_wait()
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


def with_local_endpoints(config: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    local = copy.deepcopy(config)
    openai = local["providers"]["openai"]
    openai["endpoints"] = [
        {"region": region, "host": "127.0.0.1", "port": port, "tls": False}
        for region, port in ports.items()
    ]
    openai["outlier_detection"]["consecutive_5xx"] = CONSECUTIVE_5XX
    return local


def test_an_eu_enforcers_clusters_hold_only_eu_endpoints_in_priority_order(
    config: dict[str, Any],
) -> None:
    clusters = {c["name"]: c for c in provider_clusters(config, "eu-central-1")}
    openai = clusters["provider_openai"]
    localities = [
        (e["priority"], e["locality"]["region"]) for e in openai["load_assignment"]["endpoints"]
    ]
    assert localities == [(0, "eu-central-1"), (1, "eu-west-1")]
    assert openai["outlier_detection"]["consecutive_5xx"] == 5
    assert openai["outlier_detection"]["base_ejection_time"] == "30s"
    assert openai["circuit_breakers"]["thresholds"][0]["max_pending_requests"] == 256
    # anthropic serves the EU from eu-central-1 only: one priority, no US endpoint.
    anthropic = clusters["provider_anthropic"]["load_assignment"]["endpoints"]
    assert [e["locality"]["region"] for e in anthropic] == ["eu-central-1"]
    us = {c["name"]: c for c in provider_clusters(config, "us-west-2")}
    regions = [
        e["locality"]["region"] for e in us["provider_openai"]["load_assignment"]["endpoints"]
    ]
    assert regions == ["us-west-2", "us-east-1"]


def test_a_failing_endpoint_is_ejected_and_traffic_stays_in_the_jurisdiction(
    config: dict[str, Any], upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    ports = {region: upstream.port for region, upstream in upstreams.items()}
    clusters = provider_clusters(with_local_endpoints(config, ports), "eu-west-1")
    port, admin_port = free_port(), free_port()
    envoy = EnvoyProxy(
        find_envoy(),
        tmp_path / "envoy",
        bootstrap(clusters, port, admin_port),
        admin_port=admin_port,
    )
    envoy.start_and_wait()
    try:
        validate_envoy_config(find_envoy(), envoy.config_path)
        served: list[tuple[int, str]] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(20):
                answer = client.post("/v1/chat/completions", json={"messages": []})
                served.append((answer.status_code, answer.headers.get(UPSTREAM_PORT_HEADER, "")))
            stats = client.get(f"http://127.0.0.1:{admin_port}/stats").text
    finally:
        envoy.stop()
    eu_west, eu_central = str(ports["eu-west-1"]), str(ports["eu-central-1"])
    us = {str(ports["us-east-1"]), str(ports["us-west-2"])}
    # The local region first, until outlier detection ejects it after its 5xx run (Envoy's
    # main thread ejects a moment after the worker counted the run, so a request or two more
    # may still reach it) ...
    failed = next(i for i, answer in enumerate(served) if answer != (503, eu_west))
    assert failed >= CONSECUTIVE_5XX
    # ... then only the next region of the EU, and never a US endpoint.
    assert served[failed:] == [(200, eu_central)] * (20 - failed)
    assert 20 - failed >= 10, served
    assert not us & {p for _, p in served}
    assert (
        "cluster.provider_openai.outlier_detection.ejections_enforced_consecutive_5xx: 1" in stats
    )
