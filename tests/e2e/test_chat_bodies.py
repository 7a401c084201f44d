"""Chat bodies reach the policy (their size and max_tokens bound the worst-case cost),
never the decision log: through real Envoy and real OPA, the event OPA emits for a chat
holds neither the parsed body nor the raw one, so no prompt text reaches the audit
log (whose leaves are those events)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.gateway_stack import GatewayStack, path_stack

__all__ = ["path_stack"]

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
PROMPT = "my card is 4111 1111 1111 1111, summarise-secret-7f3a"


def test_a_chat_prompt_is_decided_on_and_kept_out_of_the_decision_log(
    path_stack: GatewayStack,
) -> None:
    body = {"max_tokens": 50, "messages": [{"role": "user", "content": PROMPT}]}
    answer = path_stack.send(
        "POST",
        CHAT,
        key="acme-chat",
        headers={"x-nexus-tenant": "acme", "x-nexus-model": "gpt-4o"},
        body=json.dumps(body).encode(),
    )
    assert answer.status == 200
    assert answer.decision_id is not None
    logged = path_stack.logged_input(answer.decision_id)
    assert logged["parsed_path"] == ["v1", "chat", "completions"]
    # What the worst case was computed from, and nothing else of the body.
    assert logged["parsed_body"] == {"max_tokens": 50}
    http = logged["attributes"]["request"]["http"]
    assert "body" not in http
    assert int(http["size"]) == len(json.dumps(body))
    events = path_stack.opa.log_path.read_text(encoding="utf-8")
    assert answer.decision_id in events
    assert "summarise-secret-7f3a" not in events


def test_the_policy_reads_the_chat_body_envoy_forwards(path_stack: GatewayStack) -> None:
    # acme's $50000 cap holds any chat; a max_tokens that is not a number cannot be priced.
    answer = path_stack.send(
        "POST",
        CHAT,
        key="acme-chat",
        headers={"x-nexus-tenant": "acme", "x-nexus-model": "gpt-4o"},
        body=json.dumps({"max_tokens": "lots", "messages": []}).encode(),
    )
    assert answer.status == 400
    assert {r["rule"] for r in answer.json()["reasons"]} == {"nexus.cost.max_tokens_invalid"}
