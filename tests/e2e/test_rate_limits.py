"""Rate limits end to end: real Envoy, our ext_authz plugin in OPA, envoyproxy/ratelimit, Redis.

One shared stack (`tests.fixtures.ratelimit_stack`): two enforcers of one region
in front of the echo upstream, sharing one ratelimit service. Each test uses its
own tenants, so their buckets are apart.
"""

from __future__ import annotations

import json

import pytest

from nexus_dataplane.ratelimit import RATELIMIT_CONTROLS, RATELIMIT_RULE
from tests.fixtures.environment import eventually
from tests.fixtures.ratelimit_stack import (
    LOCAL_LIMIT,
    SHARED_CHAT_LIMIT,
    TOKENS_LIMIT,
    RateLimitStack,
)

pytestmark = [pytest.mark.opa, pytest.mark.envoy]


def test_tenant_over_its_shared_limit_gets_429_with_headers_and_reason(
    limits_stack: RateLimitStack,
) -> None:
    stack = limits_stack
    admitted = [stack.chat(stack.a, "rl-shared") for _ in range(SHARED_CHAT_LIMIT)]
    assert [r.status_code for r in admitted] == [200] * SHARED_CHAT_LIMIT
    # The window's count is visible on the allowed answers too.
    assert admitted[-1].headers["x-ratelimit-limit"].startswith(str(SHARED_CHAT_LIMIT))
    assert admitted[-1].headers["x-ratelimit-remaining"] == "0"

    refused = stack.chat(stack.a, "rl-shared")
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) > 0
    assert int(refused.headers["retry-after"]) == int(refused.headers["x-ratelimit-reset"])
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert body["reasons"] == [
        {"rule": RATELIMIT_RULE, "message": body["reasons"][0]["message"],
         "controls": list(RATELIMIT_CONTROLS)}
    ]  # fmt: skip
    # The limit is shared: the region's other enforcer refuses the tenant too.
    assert stack.chat(stack.b, "rl-shared").status_code == 429
    # Another tenant under the same limit has its own bucket.
    assert stack.chat(stack.a, "rl-other").status_code == 200

    # The refusal is logged with the decision id OPA logged the request under.
    decision_id = body["decision_id"]

    def logged_refusals() -> list[dict[str, object]]:
        return [r for r in stack.refusals(stack.a) if r["decision_id"] == decision_id]

    eventually(lambda: len(logged_refusals()) == 1)  # Envoy flushes its log each second
    logged = logged_refusals()
    assert logged[0]["status"] == 429
    assert logged[0]["rule"] == RATELIMIT_RULE
    assert json.loads(json.dumps(logged[0]["buckets"])) == {"chat-shared": "rl-shared"}
    assert stack.logged_decision(stack.a, decision_id)["parsed_path"] == [
        "v1", "chat", "completions"
    ]  # fmt: skip


def test_region_limit_is_one_bucket_per_enforcer(limits_stack: RateLimitStack) -> None:
    stack = limits_stack
    for enforcer in (stack.a, stack.b):
        answers = [stack.chat(enforcer, "rl-local").status_code for _ in range(LOCAL_LIMIT + 1)]
        assert answers == [200] * LOCAL_LIMIT + [429]
    refused = stack.chat(stack.a, "rl-local")
    assert refused.json()["reasons"][0]["rule"] == RATELIMIT_RULE
    assert refused.headers["retry-after"] == "3600"  # the local bucket refills hourly
    assert refused.headers["x-ratelimit-limit"] == str(LOCAL_LIMIT)


def test_reported_tokens_settle_the_tokens_bucket(limits_stack: RateLimitStack) -> None:
    stack = limits_stack
    per_call = 60
    first = stack.chat(stack.a, "rl-tokens", max_tokens=per_call)
    assert first.status_code == 200
    # Settled from the upstream's usage header once the response was done.
    eventually(lambda: _tokens_counted(stack) == per_call, timeout_s=10)
    assert stack.chat(stack.b, "rl-tokens", max_tokens=per_call).status_code == 200
    eventually(lambda: _tokens_counted(stack) == 2 * per_call, timeout_s=10)
    assert 2 * per_call > TOKENS_LIMIT
    refused = stack.chat(stack.a, "rl-tokens", max_tokens=1)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"


def _tokens_counted(stack: RateLimitStack) -> int:
    import redis

    client = redis.Redis.from_url(stack.redis.url)
    try:
        keys = [k for k in client.keys("*") if b"chat-tokens" in k]
        return sum(int(client.get(k) or 0) for k in keys)
    finally:
        client.close()
