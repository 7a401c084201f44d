"""canonical_path and to_opa_input decide on the path as Envoy's listener forwards it.

The expected values are what real Envoy forwarded for these targets
(tests/e2e/test_path_variants.py checks the same table through Envoy).
"""

from __future__ import annotations

import pytest

from nexus_dataplane.request import GatewayRequest, RefusedRequestError, canonical_path, parsed_path


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/", "/v1/chat/completions/"),
        ("//v1/chat/completions", "/v1/chat/completions"),
        ("/v1//chat///completions", "/v1/chat/completions"),
        ("/v1/x/../chat/completions", "/v1/chat/completions"),
        ("/v1/x/%2e%2e/chat/completions", "/v1/chat/completions"),
        ("/v1/x/%2E%2E/chat/completions", "/v1/chat/completions"),
        ("/v1/./chat/completions", "/v1/chat/completions"),
        ("/../v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chats/..", "/v1/"),
        ("/v1/chats/%2e", "/v1/chats/"),
        ("/v1/chats/c1/.", "/v1/chats/c1/"),
        ("/..", "/"),
        ("/v1/chats/...", "/v1/chats/..."),
        ("/v1/ch%61t/completions", "/v1/chat/completions"),
        ("/v1/chat\\completions", "/v1/chat/completions"),
        ("/v1/chats/%41%7e%2D", "/v1/chats/A~-"),
        ("/v1/chats/%c3%a9", "/v1/chats/%c3%a9"),
        ("/v1/chats/a%3ab", "/v1/chats/a%3ab"),
        ("/v1/chats/a%25b", "/v1/chats/a%25b"),
        ("/v1/chats/a{b}|c", "/v1/chats/a%7Bb%7D%7Cc"),
        ("/v1/chats/a`b^", "/v1/chats/a%60b%5E"),
        ("/v1/chats/c1?q=../..//x&p=%2F", "/v1/chats/c1?q=../..//x&p=%2F"),
    ],
)
def test_the_path_is_canonical_as_envoy_forwards_it(target: str, forwarded: str) -> None:
    assert canonical_path(target) == forwarded


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat%2Fcompletions",
        "/v1/chat%2fcompletions",
        "/v1/chat%5Ccompletions",
        "/v1/chats/%2e%2e%2f",
        "/v1/chat/completions#frag",
        "/v1/chat/completions?x#frag",
        "v1/chats/c1",
        "*",
    ],
)
def test_what_envoy_refuses_is_refused(target: str) -> None:
    with pytest.raises(RefusedRequestError):
        canonical_path(target)


def test_the_input_carries_the_canonical_path() -> None:
    document = GatewayRequest("POST", "/v1//x/../chat/completions?a=1").to_opa_input()
    http = document["attributes"]["request"]["http"]
    assert http["path"] == http["headers"][":path"] == "/v1/chat/completions?a=1"
    assert document["parsed_path"] == ["v1", "chat", "completions"]
    assert document["parsed_query"] == {"a": ["1"]}


def test_empty_segments_are_kept_as_the_plugin_keeps_them() -> None:
    assert parsed_path("/v1/chat/completions/") == ["v1", "chat", "completions", ""]
    assert parsed_path("/") == [""]


@pytest.mark.parametrize("method", ["post", "Post", "GeT", ""])
def test_a_method_not_in_upper_case_is_refused(method: str) -> None:
    with pytest.raises(RefusedRequestError):
        GatewayRequest(method, "/v1/chat/completions").to_opa_input()


@pytest.mark.parametrize(
    "target", ["/v1/chats/%zz", "/v1/chats/%", "/v1/chats/c1?a=%zz", "/v1/chats/c1?a=1;b=2"]
)
def test_what_the_plugin_refuses_is_refused(target: str) -> None:
    with pytest.raises(RefusedRequestError):
        GatewayRequest("GET", target).to_opa_input()
