"""Budget reservations through real Envoy and real OPA: a burst near the cap is bounded.

umbrella ($50 a month) has $0.10 left as the state document last published it, and
each chat's worst case fits alone. Between two state documents every chat is checked
against that same figure, so without holds the whole burst would pass; the enforcer
holds each admitted chat's worst case and refuses the rest with
``nexus.cost.reservation_exceeds_remaining`` (429, retry-after), a decision-log record
like any refusal. A state document read after the admitted chats ended (plus the
grace) releases their holds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.gateway_opa import put_state
from tests.fixtures.gateway_stack import GatewayStack, gateway_stack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
LEFT_MICRO_USD = 100_000
"""$0.10 left of umbrella's cap."""
BODY = json.dumps({"max_tokens": 40_000, "messages": [{"role": "user", "content": "hi"}]})
WORST_MICRO_USD = math.ceil(len(BODY) * 0.15 + 40_000 * 0.6)
"""gpt-4o-mini: $0.15 in, $0.60 out per million tokens; about $0.024 at worst."""
FIT = int(LEFT_MICRO_USD // WORST_MICRO_USD)
BURST = 24
RESERVATION_RULE = "nexus.cost.reservation_exceeds_remaining"
RELEASE_TIMEOUT_S = 60.0
GRACE_S = 2.0
"""The plugin's default reservation grace."""


def state(as_of_ms: int, left: int = LEFT_MICRO_USD) -> dict[str, Any]:
    return {
        "period": "2026-01",
        "as_of": as_of_ms,
        "spend": {
            "umbrella": {
                "ratio": 0.998,
                "models": {},
                "features": {},
                "remaining": {"total": left, "models": {}, "features": {}},
            }
        },
        "disabled": {},
    }


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[GatewayStack]:
    with gateway_stack(
        tmp_path_factory.mktemp("reservations"), opa, session_keys, signing_public_pem
    ) as running:
        yield running


def publish(stack: GatewayStack, document: dict[str, Any]) -> None:
    put_state(stack.opa.url, document)


def chat(
    stack: GatewayStack, key: str = "umbrella-chat", tenant: str = "umbrella"
) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{stack.port}{CHAT}",
        headers={
            "authorization": f"Bearer {stack.plain[key]}",
            "x-nexus-tenant": tenant,
            "x-nexus-model": "gpt-4o-mini",
            "content-type": "application/json",
        },
        content=BODY.encode(),
        timeout=10,
    )


def burst(stack: GatewayStack, n: int = BURST) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: chat(stack), range(n)))


def rules(response: httpx.Response) -> set[str]:
    return {r["rule"] for r in response.json()["reasons"]}


def logged_result(stack: GatewayStack, decision_id: str) -> dict[str, Any]:
    for line in reversed(stack.opa.log_path.read_text(encoding="utf-8").splitlines()):
        if decision_id in line:
            entry = json.loads(line)
            if entry.get("decision_id") == decision_id:
                result: dict[str, Any] = entry["result"]
                return result
    raise AssertionError(f"decision {decision_id} is not in OPA's console decision log")


def test_a_burst_near_the_cap_admits_only_what_was_left_and_refuses_the_rest(
    stack: GatewayStack,
) -> None:
    assert FIT >= 2
    publish(stack, state(now_ms()))
    answers = burst(stack)
    allowed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(allowed) == FIT
    assert {a.status_code for a in refused} == {429}
    assert all(rules(a) == {RESERVATION_RULE} for a in refused)
    assert all(a.headers["retry-after"] == "3" for a in refused)
    reason = refused[0].json()["reasons"][0]
    assert reason["controls"] == ["SOC2:A1.1", "ISO27001:A.8.6", "ISO42001:A.4.5"]
    assert 'budget of tenant "umbrella"' in reason["message"]
    # The refusal is a decision of its own in the decision log, naming the figures.
    decision_id = refused[0].headers["x-nexus-decision-id"]
    logged = logged_result(stack, decision_id)
    assert logged["allowed"] is False
    assert logged["http_status"] == 429
    assert logged["reservation"]["refused"] == "exceeds_remaining"
    assert logged["reservation"]["left"] == LEFT_MICRO_USD
    assert logged["reservation"]["held"] == FIT * WORST_MICRO_USD


def test_a_state_read_after_the_chats_ended_releases_their_holds(stack: GatewayStack) -> None:
    publish(stack, state(now_ms()))
    first = burst(stack, FIT + 4)
    assert sum(a.status_code == 200 for a in first) <= FIT
    # Envoy reports the ends (its access log flushes every second); a state read more
    # than the grace after them releases every hold, so a burst again admits what fits.
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while True:
        time.sleep(GRACE_S + 1.5)
        publish(stack, state(now_ms()))
        admitted = sum(a.status_code == 200 for a in burst(stack))
        if admitted == FIT:
            break
        assert admitted < FIT
        assert time.monotonic() < deadline, "the holds were never released"


def test_a_state_without_as_of_holds_nothing(stack: GatewayStack) -> None:
    document = state(0)
    del document["as_of"]
    publish(stack, document)
    answers = burst(stack, FIT + 3)
    assert [a.status_code for a in answers] == [200] * (FIT + 3)
