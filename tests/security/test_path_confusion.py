"""Path confusion: a client with a real key shapes the request target so that the policy
decides one route while the upstream serves another.

The insider holds acme's chat-user key (it may read chats; it may not erase
subjects) and sends, through real Envoy and real OPA, targets built to be
read differently by a decoder, a splitter and a router: dot segments plain
and escaped, escaped slashes and backslashes, empty ids, fragments and
queries that look like paths. Every answer is either a refusal, or the
upstream received the very path the policy decided on, already canonical
(an upstream that normalises it again routes it the same way), and the route
that path names is the route the policy decided.
"""

from __future__ import annotations

import pytest

from nexus_dataplane.request import canonical_path, parsed_path
from tests.fixtures.gateway_stack import GatewayStack, path_stack

__all__ = ["path_stack"]

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

ATTACKS = [
    "/v1/chats/..",
    "/v1/chats/%2e%2e",
    "/v1/chats/.%2e",
    "/v1/chats/%2e",
    "/v1/chats/",
    "/v1/chats//",
    "/v1/chats/c1/..",
    "/v1/chats/c1%2F..%2F..%2Fsubjects%2Fs1",
    "/v1/chats/c1%2f..%2f..%2fsubjects%2fs1",
    "/v1/chats/..%2F..%2Fsubjects%2Fs1",
    "/v1/chats/c1%5C..%5C..%5Csubjects%5Cs1",
    "/v1/chats/c1\\..\\..\\subjects\\s1",
    "/v1/chats/c1/../../subjects/s1",
    "/v1/chats/c1#/../../subjects/s1",
    "/v1/chats/c1?/../../subjects/s1",
    "/v1/chats/%252e%252e",
    "/v1/chats/c1%00",
    "//v1/subjects/s1",
    "/v1/subjects/s1/..",
]


def _route(method: str, segments: list[str]) -> str | None:
    """The route a path names, by the gateway contract (rego/README.md), ids never empty."""
    match segments:
        case ["v1", "chat", "completions"] if method == "POST":
            return "chat.completions"
        case ["v1", "tools", tool] if method == "POST" and tool.endswith(":invoke"):
            return "tools.invoke"
        case ["v1", "chats", chat] if chat and method in ("GET", "DELETE"):
            return f"chats.{'read' if method == 'GET' else 'delete'}"
        case ["v1", "subjects", subject] if subject and method == "DELETE":
            return "subjects.erase"
    return None


def test_client_cannot_reach_a_route_the_policy_did_not_decide(path_stack: GatewayStack) -> None:
    allowed = 0
    for method in ("GET", "DELETE"):
        for target in ATTACKS:
            # The store vouches for whichever chat the target names once canonical, so no
            # attack is refused only for want of a record token.
            headers = {"x-nexus-tenant": "acme", **path_stack.record_headers_for(target)}
            answer = path_stack.send(method, target, key="acme-chat", headers=headers)
            if answer.status != 200:
                continue
            allowed += 1
            served = answer.upstream_path
            assert served is not None and answer.decision_id is not None
            decided = path_stack.logged_input(answer.decision_id)
            decided_path = decided["attributes"]["request"]["http"]["path"]
            served_path = served.partition("?")[0]
            assert served_path == decided_path, f"{method} {target}: served {served}"
            assert canonical_path(served) == served, f"{method} {target}: {served} not canonical"
            upstream_route = _route(method, parsed_path(served_path))
            assert upstream_route is not None, f"{method} {target}: allowed, served {served}"
            assert upstream_route == _route(method, decided["parsed_path"])
            assert upstream_route == "chats.read", f"{method} {target} reached {upstream_route}"
    # The attacks are not all refused for an unrelated reason: the key does read chats.
    headers = {"x-nexus-tenant": "acme", **path_stack.record_headers("c-1001")}
    answer = path_stack.send("GET", "/v1/chats/c-1001", key="acme-chat", headers=headers)
    assert answer.status == 200
