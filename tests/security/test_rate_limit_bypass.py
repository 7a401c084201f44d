"""Attacks on the rate limits, through real Envoy + OPA + envoyproxy/ratelimit + Redis.

The bucket a request counts against is named by the policy from the credential
(ext_authz dynamic metadata), never from anything the client sends, and a
shared limit is one counter in Redis for every enforcer. Each test uses tenants
of its own in the session's `limits_stack`.
"""

from __future__ import annotations

import json

import pytest

from nexus_dataplane.ratelimit import RATELIMIT_RULE
from tests.fixtures.ratelimit_stack import SHARED_CHAT_LIMIT, RateLimitStack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

FORGED_HEADERS = {
    # What Envoy's rate limit actions could read if they were built on headers.
    "x-nexus-ratelimit": json.dumps({"chat-shared": "rl-victim"}),
    "x-nexus-ratelimit-bucket": "rl-victim",
    "x-envoy-ratelimited": "false",
    "x-ratelimit-remaining": "1000",
    "x-nexus-usage-tokens": "0",
    "x-nexus-feature": "unlimited",
}


def test_forged_tenant_and_descriptor_headers_do_not_escape_the_shared_limit(
    limits_stack: RateLimitStack,
) -> None:
    stack = limits_stack
    for _ in range(SHARED_CHAT_LIMIT):
        assert stack.chat(stack.a, "rl-forger").status_code == 200
    assert stack.chat(stack.a, "rl-forger").status_code == 429

    # Claiming another tenant with one's own credential is refused by the policy (403),
    # before any bucket is counted.
    claimed = stack.chat(stack.a, "rl-forger", headers={"x-nexus-tenant": "rl-victim"})
    assert claimed.status_code == 403
    # Headers that look like bucket names or limiter state change nothing.
    forged = stack.chat(stack.a, "rl-forger", headers=FORGED_HEADERS)
    assert forged.status_code == 429
    assert forged.json()["reasons"][0]["rule"] == RATELIMIT_RULE

    # The victim's bucket was never touched: it still admits exactly its limit.
    answers = [stack.chat(stack.b, "rl-victim").status_code for _ in range(SHARED_CHAT_LIMIT + 1)]
    assert answers == [200] * SHARED_CHAT_LIMIT + [429]


def test_spreading_requests_over_two_enforcers_does_not_multiply_a_shared_limit(
    limits_stack: RateLimitStack,
) -> None:
    stack = limits_stack
    answers = [
        stack.chat(stack.a if i % 2 == 0 else stack.b, "rl-spread").status_code
        for i in range(2 * SHARED_CHAT_LIMIT)
    ]
    assert answers.count(200) == SHARED_CHAT_LIMIT
    assert answers == [200] * SHARED_CHAT_LIMIT + [429] * SHARED_CHAT_LIMIT


def test_ratelimit_service_down_fails_closed(limits_stack: RateLimitStack) -> None:
    """Stopping the ratelimit service must refuse shared-limited requests, not admit them."""
    stack = limits_stack
    stack.service.stop()
    try:
        answer = stack.chat(stack.a, "rl-other")
        assert answer.status_code == 503, answer.text
    finally:
        stack.service.start_and_wait()
