"""Budget burst overshoot: a tenant near its cap fires many expensive chats at once, before
any of their spend is counted, to spend far past the cap.

The insider holds umbrella's chat key; umbrella ($50 a month) has $0.10 left as the
state bundle last published it, and the spend of a burst reaches the state only after
the calls settle. Through real Envoy and real OPA, every request whose worst case
(price * (body bytes + max_tokens)) exceeds what is left is refused however many
arrive together, so what a burst can admit beyond the cap is bounded by the
in-flight requests times what each may cost at worst. The dodges — no max_tokens, a
string or a duplicate max_tokens, a small max_tokens beside a huge
max_completion_tokens, a huge prompt, a body past the forwarding limit — are refused
too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.gateway_opa import put_state
from tests.fixtures.gateway_stack import Answer, GatewayStack, gateway_stack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
LEFT_MICRO_USD = 100_000
"""$0.10: what umbrella's cap has left in the published state."""
BURST = 40
HEADERS = {"x-nexus-tenant": "umbrella", "x-nexus-model": "gpt-4o-mini"}
STATE = {
    "period": "2026-01",
    "spend": {
        "umbrella": {
            "ratio": 0.998,
            "models": {},
            "features": {},
            "remaining": {"total": LEFT_MICRO_USD, "models": {}, "features": {}},
        }
    },
    "disabled": {},
}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[GatewayStack]:
    with gateway_stack(
        tmp_path_factory.mktemp("burst"), opa, session_keys, signing_public_pem
    ) as running:
        put_state(running.opa.url, STATE)
        yield running


def chat(stack: GatewayStack, body: bytes) -> Answer:
    return stack.send("POST", CHAT, key="umbrella-chat", headers=HEADERS, body=body)


def rules(answer: Answer) -> set[str]:
    return {r["rule"] for r in answer.json()["reasons"]}


def test_a_burst_of_huge_max_tokens_chats_is_refused_whole(stack: GatewayStack) -> None:
    # 10M output tokens at $0.60/Mtok: $6 at worst, against $0.10 left.
    body = json.dumps({"max_tokens": 10_000_000, "messages": [{"role": "user", "content": "x"}]})
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        answers = list(pool.map(lambda _: chat(stack, body.encode()), range(BURST)))
    assert [a.status for a in answers] == [429] * BURST
    assert all(rules(a) == {"nexus.cost.worst_case_exceeds_remaining"} for a in answers)


def test_what_a_burst_admits_is_bounded_by_the_worst_case_of_each(stack: GatewayStack) -> None:
    # $0.06 at worst each: one fits in $0.10, so each of the burst does (the state has not
    # moved), and the overshoot is at most BURST * $0.06: the bound the README states.
    fits = json.dumps({"max_tokens": 100_000, "messages": [{"role": "user", "content": "x"}]})
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        answers = list(pool.map(lambda _: chat(stack, fits.encode()), range(BURST)))
    assert {a.status for a in answers} == {200}
    worst_each = 100_000 * 0.6 + len(fits) * 0.15
    assert worst_each <= LEFT_MICRO_USD


@pytest.mark.parametrize(
    ("body", "status", "rule"),
    [
        pytest.param(
            b'{"max_tokens": "10000000"}', 400, "nexus.cost.max_tokens_invalid", id="string"
        ),
        pytest.param(b'{"max_tokens": -1}', 400, "nexus.cost.max_tokens_invalid", id="negative"),
        pytest.param(
            b'{"max_tokens": 1, "max_tokens": 10000000}',
            400,
            "nexus.request.body_duplicate_key",
            id="duplicate key",
        ),
        pytest.param(
            b'{"max_tokens": 10, "max_completion_tokens": 10000000}',
            429,
            "nexus.cost.worst_case_exceeds_remaining",
            id="max_completion_tokens",
        ),
        pytest.param(
            # 16384 output tokens (gpt-4o-mini's max output) fit; 700 kB of prompt do not.
            json.dumps({"messages": [{"role": "user", "content": "y" * 700_000}]}).encode(),
            429,
            "nexus.cost.worst_case_exceeds_remaining",
            id="huge prompt without max_tokens",
        ),
    ],
)
def test_dodging_the_worst_case_is_refused(
    stack: GatewayStack, body: bytes, status: int, rule: str
) -> None:
    answer = chat(stack, body)
    assert answer.status == status
    assert rule in rules(answer)


def test_a_body_past_the_forwarding_limit_never_reaches_the_upstream(stack: GatewayStack) -> None:
    body = json.dumps({"max_tokens": 1, "messages": [{"content": "z" * (1024 * 1024)}]})
    answer = chat(stack, body.encode())
    assert answer.status == 413
    assert answer.upstream_path is None
