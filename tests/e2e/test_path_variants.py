"""Request targets that are not the canonical route, through real Envoy and real OPA.

Envoy's listener canonicalises the path (nexus_dataplane.envoy.PATH_NORMALISATION)
before ext_authz and routing, so every variant is either normalised to a
canonical path, decided on and forwarded as that path, or refused: by Envoy
(400, before any decision) or by the policy (404, ``nexus.request.unknown_route``,
the contract's answer for any other path). For every allowed request the
upstream received exactly the path the policy decided on, and the SDK's
`GatewayRequest.to_opa_input` builds the same path and ``parsed_path``.
"""

from __future__ import annotations

import pytest

from nexus_dataplane.request import (
    GatewayRequest,
    RefusedRequestError,
    canonical_path,
    parsed_path,
)
from tests.fixtures.gateway_stack import GatewayStack, path_stack

__all__ = ["path_stack"]

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
ENVOY_REFUSES = 400
UNKNOWN_ROUTE = "nexus.request.unknown_route"


def _headers(path_stack: GatewayStack, method: str, target: str) -> dict[str, str]:
    headers = {"x-nexus-tenant": "acme"}
    if method.upper() == "POST":
        headers["x-nexus-model"] = "gpt-4o"
    else:
        # The store vouches for the chat the variant names once canonical.
        headers.update(path_stack.record_headers_for(target))
    return headers


# (id, method, target, status, the path the upstream receives on a 200)
VARIANTS = [
    ("canonical chat", "POST", CHAT, 200, CHAT),
    ("trailing slash", "POST", CHAT + "/", 404, None),
    ("trailing slash on a read", "GET", "/v1/chats/c-1001/", 404, None),
    ("leading double slash", "POST", "//v1/chat/completions", 200, CHAT),
    ("double slash in the middle", "POST", "/v1//chat/completions", 200, CHAT),
    ("triple slashes", "POST", "///v1///chat/completions", 200, CHAT),
    ("escaped slash %2F", "POST", "/v1/chat%2Fcompletions", ENVOY_REFUSES, None),
    ("escaped slash %2f", "POST", "/v1/chat%2fcompletions", ENVOY_REFUSES, None),
    ("escaped backslash %5C", "POST", "/v1/chat%5Ccompletions", ENVOY_REFUSES, None),
    ("escaped slash in an id", "GET", "/v1/chats/c1%2F..%2F..%2Fsubjects", ENVOY_REFUSES, None),
    ("backslash", "POST", "/v1/chat\\completions", 200, CHAT),
    ("%2e%2e segment", "POST", "/v1/x/%2e%2e/chat/completions", 200, CHAT),
    ("%2E%2E segment", "POST", "/v1/x/%2E%2E/chat/completions", 200, CHAT),
    (".. segment", "POST", "/v1/x/../chat/completions", 200, CHAT),
    (".. above the root", "POST", "/../v1/chat/completions", 200, CHAT),
    ("an empty segment then ..", "GET", "/v1/chats//../c-1", 200, "/v1/chats/c-1"),
    ("escaped non-ASCII", "GET", "/v1/chats/caf%C3%A9", 200, "/v1/chats/caf%C3%A9"),
    ("characters Envoy escapes", "GET", "/v1/chats/a{b}", 200, "/v1/chats/a%7Bb%7D"),
    ("./ segment", "POST", "/v1/./chat/completions", 200, CHAT),
    (".. as the id", "GET", "/v1/chats/..", 404, None),
    ("%2e%2e as the id", "GET", "/v1/chats/%2e%2e", 404, None),
    (". as the id", "GET", "/v1/chats/%2e", 404, None),
    ("an empty id", "GET", "/v1/chats/", 404, None),
    ("an empty subject", "DELETE", "/v1/subjects/", 404, None),
    ("escaped unreserved letters", "POST", "/v1/ch%61t/c%6Fmpletions", 200, CHAT),
    ("lower-case method", "post", CHAT, ENVOY_REFUSES, None),
    ("mixed-case method", "PoSt", CHAT, ENVOY_REFUSES, None),
    ("mixed-case read", "Get", "/v1/chats/c-1001", ENVOY_REFUSES, None),
    ("read with a query", "GET", "/v1/chats/c-1001?page=2", 200, "/v1/chats/c-1001?page=2"),
    (
        "dots and slashes in the query",
        "GET",
        "/v1/chats/c-1001?q=../..//x&p=%2F",
        200,
        "/v1/chats/c-1001?q=../..//x&p=%2F",
    ),
    ("dot segments before a query", "GET", "/v1/x/../chats/c-1?a=1", 200, "/v1/chats/c-1?a=1"),
    ("fragment", "POST", CHAT + "#top", ENVOY_REFUSES, None),
    ("fragment after a query", "GET", "/v1/chats/c-1001?a=1#top", ENVOY_REFUSES, None),
    ("relative target", "GET", "v1/chats/c-1001", ENVOY_REFUSES, None),
    ("malformed escape", "GET", "/v1/chats/%zz", 400, None),
    ("a ';' in the query", "GET", "/v1/chats/c-1001?a=1;b=2", 400, None),
]


@pytest.mark.parametrize(
    ("method", "target", "status", "forwarded"),
    [v[1:] for v in VARIANTS],
    ids=[v[0] for v in VARIANTS],
)
def test_each_path_variant_is_normalised_or_refused(
    path_stack: GatewayStack, method: str, target: str, status: int, forwarded: str | None
) -> None:
    body = b"{}" if method.upper() == "POST" else b""
    answer = path_stack.send(
        method, target, key="acme-chat", headers=_headers(path_stack, method, target), body=body
    )
    assert answer.status == status, answer.body[:300]
    sdk = GatewayRequest(
        method, target, {"authorization": "Bearer x", **_headers(path_stack, method, target)}
    )

    if answer.decision_id is None:
        # Refused by Envoy itself: no decision, and the SDK refuses it too.
        assert status == ENVOY_REFUSES
        with pytest.raises(RefusedRequestError):
            sdk.to_opa_input()
        return

    # The decision log keeps the path without its query (masked: it may carry secrets).
    decided = path_stack.logged_input(answer.decision_id)
    decided_path = decided["attributes"]["request"]["http"]["path"]
    if status == 200:
        assert answer.upstream_path == forwarded
        assert forwarded.partition("?")[0] == decided_path
        assert decided["parsed_path"] == parsed_path(decided_path)
    elif "parsed_path" not in decided:
        # Refused by the plugin (a target it cannot parse): the SDK refuses it too.
        with pytest.raises(RefusedRequestError):
            sdk.to_opa_input()
        return
    else:
        assert UNKNOWN_ROUTE in {r["rule"] for r in answer.json()["reasons"]}
    sdk_input = sdk.to_opa_input()
    assert sdk_input["attributes"]["request"]["http"]["path"].partition("?")[0] == decided_path
    assert canonical_path(target).partition("?")[0] == decided_path
    assert sdk_input["parsed_path"] == decided["parsed_path"]
