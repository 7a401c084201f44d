"""The input document is the same whether Envoy's plugin builds it or the Python SDK does.

The same requests go through real Envoy to our ext_authz plugin (which logs
the input it decided on, with decision logs on the console) and through
`GatewayRequest.to_opa_input`; every field the SDK builds must be there in
the plugin's input with the same value. What only Envoy can know (the
connection's addresses, Envoy's request id and timing headers) is listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from nexus_contract.wire import DECISION_ID_HEADER, DECISION_PATH, EXT_AUTHZ_PLUGIN
from nexus_control.authoring.opa import Opa
from nexus_dataplane.envoy import EnvoyProxy, envoy_config
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import free_port
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.spec import EnforcerSpec
from nexus_dataplane.upstream import Upstream
from nexus_runtime.toolchain import find_envoy

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

ALLOW_ALL = """package nexus.envoy.authz

default decision := {"allowed": true, "http_status": 200, "headers": {}}
"""

ENVOY_ONLY_HEADERS = frozenset(
    {
        "x-request-id",
        "x-forwarded-proto",
        "x-envoy-auth-partial-body",
        "content-length",
        "user-agent",
        "accept",
        "accept-encoding",
    }
)
"""Headers Envoy (or the HTTP client) adds on its own, which a caller of the SDK does not send."""
CONNECTION_HEADERS = frozenset({":authority", "host"})
"""The address the client dialled: the SDK names the gateway, the test dials loopback."""
ENVOY_ONLY_HTTP = frozenset({"id", "host", "scheme", "protocol", "size", "headers"})
"""``attributes.request.http`` fields compared separately (or only Envoy knows)."""


@dataclass(frozen=True)
class Stack:
    gateway: str
    opa: OpaServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, opa: Opa) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("parity")
    policy = workdir / "policy"
    policy.mkdir()
    (policy / "allow.rego").write_text(ALLOW_ALL)
    upstream = Upstream(workdir / "upstream")
    upstream.start_and_wait()
    spec = EnforcerSpec(
        region="eu-west-1",
        enforcer_id="parity-1",
        control_plane_url="http://127.0.0.1:9",
        token="unused",
        key_id="unused",
        verification_key_pem="",
        persistence_dir=workdir / "persist",
        grpc_port=free_port(),
        opa_port=free_port(),
        envoy_port=free_port(),
        envoy_admin_port=free_port(),
        upstream_host="127.0.0.1",
        upstream_port=upstream.port,
    )
    server = OpaServer(
        opa.binary,
        workdir,
        config={
            "plugins": {
                EXT_AUTHZ_PLUGIN: {"addr": f"127.0.0.1:{spec.grpc_port}", "path": DECISION_PATH}
            },
            "decision_logs": {"console": True},
        },
        args=[str(policy)],
        port=spec.opa_port,
    )
    envoy = EnvoyProxy(find_envoy(), workdir, envoy_config(spec), admin_port=spec.envoy_admin_port)
    try:
        server.start_and_wait(bundles=False)
        envoy.start_and_wait()
        yield Stack(f"http://127.0.0.1:{spec.envoy_port}", server)
    finally:
        envoy.stop()
        server.stop()
        upstream.stop()


def _logged_input(server: OpaServer, decision_id: str) -> dict[str, Any]:
    for line in reversed(server.log_path.read_text(encoding="utf-8").splitlines()):
        if decision_id not in line:
            continue
        entry = json.loads(line)
        if entry.get("decision_id") == decision_id:
            logged: dict[str, Any] = entry["input"]
            return logged
    raise AssertionError(f"decision {decision_id} is not in OPA's console decision log")


def _send(stack: Stack, request: GatewayRequest) -> str:
    response = httpx.request(
        request.method,
        stack.gateway + request.path,
        headers=request.header_map(),
        content=request.body_text() or None,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers[DECISION_ID_HEADER]


REQUESTS = [
    pytest.param(
        GatewayRequest(
            "POST",
            "/v1/chat/completions",
            {
                "x-nexus-tenant": "acme",
                "x-nexus-model": "gpt-4o",
                "content-type": "application/json",
            },
            {"messages": [{"role": "user", "content": "hello <world> & \u00e9"}], "max_tokens": 64},
        ),
        id="chat with a JSON body",
    ),
    pytest.param(
        GatewayRequest("GET", "/v1/chats/c-1001?page=2&tag=a&tag=b", {"x-nexus-tenant": "acme"}),
        id="read with a query string",
    ),
    pytest.param(
        GatewayRequest(
            "POST",
            "/v1/tools/web-search:invoke",
            {"x-nexus-tenant": "acme", "authorization": "Bearer nx_not-a-real-key"},
            {"arguments": {"query": "weather", "limit": 3, "nested": {"a": [1, 2.5, None, True]}}},
        ),
        id="tool call with a credential",
    ),
    pytest.param(
        GatewayRequest("DELETE", "/v1/subjects/subj-42", {"x-nexus-tenant": "acme"}),
        id="erasure without a body",
    ),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_the_plugin_and_the_sdk_build_the_same_input(
    stack: Stack, request_: GatewayRequest
) -> None:
    decision_id = _send(stack, request_)
    envoy_input = _logged_input(stack.opa, decision_id)
    sdk_input = request_.to_opa_input()

    for key in sorted(sdk_input.keys() - {"attributes"}):
        assert envoy_input.get(key) == sdk_input[key], f"input.{key} differs"
    assert sorted(envoy_input.keys() - sdk_input.keys() - {"attributes"}) == []

    envoy_http = envoy_input["attributes"]["request"]["http"]
    sdk_http = sdk_input["attributes"]["request"]["http"]
    for key in sorted(sdk_http.keys() - ENVOY_ONLY_HTTP):
        assert envoy_http.get(key) == sdk_http[key], f"input.attributes.request.http.{key} differs"
    for name, value in sdk_http["headers"].items():
        if name not in CONNECTION_HEADERS:
            assert envoy_http["headers"].get(name) == value, f"header {name} differs"
    extra = envoy_http["headers"].keys() - sdk_http["headers"].keys()
    assert extra <= ENVOY_ONLY_HEADERS, (
        f"Envoy sent headers the SDK does not know of: {sorted(extra)}"
    )


def test_the_parity_test_sees_a_real_difference(stack: Stack) -> None:
    """The comparison is not vacuous: another path gives another parsed_path."""
    sent = GatewayRequest("GET", "/v1/chats/c-1", {"x-nexus-tenant": "acme"})
    envoy_input = _logged_input(stack.opa, _send(stack, sent))
    other = GatewayRequest("GET", "/v1/chats/c-2", {"x-nexus-tenant": "acme"}).to_opa_input()
    assert envoy_input["parsed_path"] != other["parsed_path"]


def test_logged_input_is_found_by_decision_id(stack: Stack) -> None:
    first = _send(stack, GatewayRequest("GET", "/v1/chats/a", {"x-nexus-tenant": "acme"}))
    second = _send(stack, GatewayRequest("GET", "/v1/chats/b", {"x-nexus-tenant": "acme"}))
    assert _logged_input(stack.opa, first)["parsed_path"][-1] == "a"
    assert _logged_input(stack.opa, second)["parsed_path"][-1] == "b"
