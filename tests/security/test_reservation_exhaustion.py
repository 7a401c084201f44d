"""Reservation exhaustion: an insider tries to use the enforcer's budget holds to starve
others' chats — with chats whose worst case is absurd (to fill the holds without paying)
or by exhausting one tenant's holds to block another.

Through real Envoy and real OPA: a chat the policy refuses (its worst case exceeds what
is left) is refused before any hold is taken, so a flood of absurd chats holds nothing
and the tenant's own ordinary chats still fit; and holds are per scope, named with the
tenant, so one tenant's exhausted holds never refuse another's chats.
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
from tests.fixtures.gateway_stack import GatewayStack, gateway_stack

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
LEFT_MICRO_USD = 100_000
BODY = json.dumps({"max_tokens": 40_000, "messages": [{"role": "user", "content": "hi"}]})
ABSURD = json.dumps({"max_tokens": 10**12, "messages": [{"role": "user", "content": "x"}]})
FIT = LEFT_MICRO_USD // math.ceil(len(BODY) * 0.15 + 40_000 * 0.6)
"""gpt-4o-mini's worst case of BODY that fits in what umbrella has left."""
FLOOD = 40


def state() -> dict[str, Any]:
    left: dict[str, dict[str, int]] = {"models": {}, "features": {}}
    return {
        "period": "2026-01",
        "as_of": int(time.time() * 1000),
        "spend": {
            "umbrella": {
                "ratio": 0.998,
                "models": {},
                "features": {},
                "remaining": {"total": LEFT_MICRO_USD, **left},
            },
            "hooli": {
                "ratio": 0.998,
                "models": {},
                "features": {},
                "remaining": {"total": LEFT_MICRO_USD, **left},
            },
        },
        "disabled": {},
    }


@pytest.fixture
def stack(
    tmp_path: Path, opa: Opa, session_keys: KeyPaths, signing_public_pem: Path
) -> Iterator[GatewayStack]:
    with gateway_stack(tmp_path, opa, session_keys, signing_public_pem) as running:
        httpx.put(
            f"{running.opa.url}/v1/data/nexus_state", json=state(), timeout=5
        ).raise_for_status()
        yield running


def chat(stack: GatewayStack, tenant: str, body: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{stack.port}{CHAT}",
        headers={
            "authorization": f"Bearer {stack.plain[f'{tenant}-chat']}",
            "x-nexus-tenant": tenant,
            "x-nexus-model": "gpt-4o-mini",
            "content-type": "application/json",
        },
        content=body.encode(),
        timeout=10,
    )


def flood(stack: GatewayStack, tenant: str, body: str, n: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=min(n, 20)) as pool:
        return list(pool.map(lambda _: chat(stack, tenant, body), range(n)))


def rules(response: httpx.Response) -> set[str]:
    return {r["rule"] for r in response.json()["reasons"]}


def test_a_flood_of_absurd_chats_holds_nothing(stack: GatewayStack) -> None:
    absurd = flood(stack, "umbrella", ABSURD, FLOOD)
    assert [a.status_code for a in absurd] == [429] * FLOOD
    assert all(rules(a) == {"nexus.cost.worst_case_exceeds_remaining"} for a in absurd)
    # The tenant's ordinary chats fit as if the flood had never been sent.
    ordinary = [chat(stack, "umbrella", BODY) for _ in range(FIT + 1)]
    assert [a.status_code for a in ordinary] == [200] * FIT + [429]
    assert rules(ordinary[-1]) == {"nexus.cost.reservation_exceeds_remaining"}


def test_one_tenants_exhausted_holds_never_refuse_another_tenant(stack: GatewayStack) -> None:
    umbrella = flood(stack, "umbrella", BODY, FIT + 10)
    assert sum(a.status_code == 200 for a in umbrella) == FIT
    # hooli has as much left, in its own scope: every chat that fits is served.
    hooli = [chat(stack, "hooli", BODY) for _ in range(FIT)]
    assert [a.status_code for a in hooli] == [200] * FIT
