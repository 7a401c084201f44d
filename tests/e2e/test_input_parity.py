"""The input document is the same whether Envoy's plugin builds it or the Python SDK does.

The same requests go through real Envoy to our ext_authz plugin (which logs
the input it decided on, with decision logs on the console) and through
`GatewayRequest.to_opa_input`; every field the SDK builds must be there in
the plugin's input with the same value. What only Envoy can know (the
connection's addresses, Envoy's request id and timing headers) is listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from nexus_contract.wire import DECISION_ID_HEADER
from nexus_control.authoring.opa import Opa
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.request import GatewayRequest
from tests.fixtures.gateway_stack import console_logged_input, ext_authz_proxy

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
    with ext_authz_proxy(workdir, opa, [str(policy)], enforcer_id="parity-1") as (port, server):
        yield Stack(f"http://127.0.0.1:{port}", server)


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
    envoy_input = console_logged_input(stack.opa, decision_id)
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
    envoy_input = console_logged_input(stack.opa, _send(stack, sent))
    other = GatewayRequest("GET", "/v1/chats/c-2", {"x-nexus-tenant": "acme"}).to_opa_input()
    assert envoy_input["parsed_path"] != other["parsed_path"]


def test_logged_input_is_found_by_decision_id(stack: Stack) -> None:
    first = _send(stack, GatewayRequest("GET", "/v1/chats/a", {"x-nexus-tenant": "acme"}))
    second = _send(stack, GatewayRequest("GET", "/v1/chats/b", {"x-nexus-tenant": "acme"}))
    assert console_logged_input(stack.opa, first)["parsed_path"][-1] == "a"
    assert console_logged_input(stack.opa, second)["parsed_path"][-1] == "b"
