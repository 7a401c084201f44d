"""The demo's burst near a cap: stark has $0.10 left under its monthly cap when `CLIENTS`
clients start chatting at once, each chat's worst case $0.04, each call's usage reported at
that worst case once it settles (the adversarial outcome).

The policy admits a chat only if its worst case fits what the last state bundle left, and
the enforcer holds each admitted chat's worst case until a later state counts its spend
(`nexus.cost.reservation_exceeds_remaining` refuses what does not fit beside the holds).
So the burst admits what was left (two chats), not one per client; the step checks that
the spend admitted beyond the cap is within the bound, in flight x worst case, and shows
the refusals that enforce it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from nexus_cli.demo.polling import until
from nexus_cli.demo.stack import DemoRun
from nexus_contract.wire import MODEL_HEADER, STATE_BUNDLE, TENANT_HEADER
from nexus_control.budgets.state import current_state

__all__ = ["show_burst"]

TENANT, KEY, MODEL = "stark", "demo-stark-agent", "gpt-4o"
CAP_USD = 120_000.0
"""stark's monthly cap in bundles/gateway/tenants.yaml. What is left of it is read from the
enforcer's state bundle (the anomaly step's history counts in the open window too)."""
INPUT_USD_PER_MTOK, OUTPUT_USD_PER_MTOK = 2.5, 10.0
"""gpt-4o's price in bundles/gateway/models.yaml."""
ROOM_USD = 0.10
BURST_TOKENS = 4_000
"""Each burst chat's worst case: $0.04, so two fit in what is left."""
CLIENTS = 16
CALL_S = 0.3
"""How long each admitted call "takes" before its usage is reported."""
DEADLINE_S = 20.0
BUDGET_RULES = ("nexus.budget.", "nexus.cost.")
RESERVATION_RULE = "nexus.cost.reservation_exceeds_remaining"
PROMPT = [{"role": "user", "content": "summarise the TPS reports"}]


def _chat_body(max_tokens: int) -> tuple[bytes, float]:
    """A chat's JSON body and its worst case in USD (price x (body bytes + max_tokens))."""
    body = httpx.Request("POST", "http://x", json={"messages": PROMPT, "max_tokens": max_tokens})
    content = body.read()
    micros = math.ceil(len(content) * INPUT_USD_PER_MTOK + max_tokens * OUTPUT_USD_PER_MTOK)
    return content, micros / 1_000_000


@dataclass
class _Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0
    shed: int = 0
    admitted_ids: list[str] = field(default_factory=list)


def show_burst(
    run: DemoRun, gateway: str, keys: dict[str, str], seen: Callable[[httpx.Response], object]
) -> tuple[bool, list[str]]:
    """Bring stark near its cap, burst, and check the overshoot bound; whether it held."""
    assert run.server is not None
    body, worst = _chat_body(BURST_TOKENS)
    plane = run.plane
    assert plane is not None
    enforcer = run.stacks[0].enforcers[0]
    headers = {
        "authorization": f"Bearer {keys[KEY]}",
        TENANT_HEADER: TENANT,
        MODEL_HEADER: MODEL,
        "content-type": "application/json",
    }
    tally = _Tally()

    with (
        httpx.Client(
            base_url=run.server.url,
            headers={"authorization": f"Bearer {run.tokens['gateway']}"},
            timeout=10,
        ) as usage,
        httpx.Client(base_url=enforcer.opa_url, headers=enforcer.opa_headers, timeout=10) as opa,
    ):

        def report(cost: float) -> None:
            usage.post(
                "/v1/usage",
                json={"request_id": f"demo-burst-{uuid.uuid4()}", "tenant": TENANT,
                      "model": MODEL, "tokens": BURST_TOKENS, "cost_usd": round(cost, 6)},
            ).raise_for_status()  # fmt: skip

        def client_loop(_: int) -> None:
            with httpx.Client(timeout=10) as client:
                while _one_chat(client, gateway, body, headers, seen, tally):
                    time.sleep(CALL_S)
                    report(worst)
                    with tally.lock:
                        tally.in_flight -= 1

        def active_state() -> str | None:
            # The state bundle the enforcer's OPA runs, from its status API (a data query
            # would itself be a decision-log event, and no chat is sent, and held, to learn it).
            answer = opa.get("/v1/status")
            bundles = answer.json().get("result", {}).get("bundles", {})
            revision = bundles.get(STATE_BUNDLE, {}).get("active_revision")
            return str(revision) if revision else None

        def published() -> tuple[str, dict[str, Any]]:
            with plane.db.session() as session:
                current = current_state(session)
                assert current is not None
                return current.revision, current.data

        _, document = published()
        before = document.get("spend", {}).get(TENANT, {}).get("remaining", {}).get("total")
        if not isinstance(before, int):
            return False, [f"{TENANT}: the state bundle names no budget left"]
        prefill = round(before / 1_000_000 - ROOM_USD, 6)
        report(prefill)
        plane.budgets.rebuild()  # at once, rather than after the debounce

        def state_arrived() -> bool:
            # Every state published since the rebuild counts the prefill.
            return active_state() == published()[0]

        if until(state_arrived, DEADLINE_S) is None:
            return False, [f"{TENANT}: the state bundle with its prefill never arrived"]
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client_loop, range(CLIENTS)))
        took = time.monotonic() - started

    over = max(tally.admitted * worst - ROOM_USD, 0.0)
    bound = tally.most_in_flight * worst
    reserved = tally.refused.get(RESERVATION_RULE, 0)
    held = over <= bound + 1e-6 and bool(tally.refused) and reserved > 0
    held = held and all(rule.startswith(BUDGET_RULES) for rule in tally.refused)
    refusals = ", ".join(f"{rule} x{n}" for rule, n in sorted(tally.refused.items()))
    return held, [
        f"{TENANT}: ${ROOM_USD:.2f} left under its ${CAP_USD:,.0f} cap once its enforcer runs the "
        f"state bundle that says so; {CLIENTS} clients burst at once "
        f"with ${worst:.4f} worst cases for {took:.1f} s → {tally.admitted} admitted "
        f"({tally.shed} shed and retried; {', '.join(i[:8] for i in tally.admitted_ids)}), "
        f"then refused: {refusals}",
        f"spend admitted beyond the cap ${over:.4f} ({over / worst:.1f} worst cases), bound "
        f"{tally.most_in_flight} in flight x worst case = ${bound:.2f}: "
        + ("held, by the enforcer's holds on in-flight worst cases" if held else "NOT held"),
    ]


def _one_chat(
    client: httpx.Client,
    gateway: str,
    body: bytes,
    headers: dict[str, str],
    seen: Callable[[httpx.Response], object],
    tally: _Tally,
) -> bool:
    """Send one burst chat; True when admitted (the caller settles it and leaves flight),
    False once refused. A chat the enforcer shed (a busy machine) is retried, as a
    gateway would; it was not admitted."""
    while True:
        with tally.lock:
            tally.in_flight += 1
            tally.most_in_flight = max(tally.most_in_flight, tally.in_flight)
        answer = client.post(gateway + "/v1/chat/completions", content=body, headers=headers)
        seen(answer)
        rule = _budget_rule(answer)
        with tally.lock:
            if answer.status_code == 200:
                tally.admitted += 1
                tally.admitted_ids.append(answer.headers.get("x-nexus-decision-id", "?"))
                return True
            tally.in_flight -= 1
            if answer.status_code == 503 and rule is None:
                tally.shed += 1
            else:
                key = rule or str(answer.status_code)
                tally.refused[key] = tally.refused.get(key, 0) + 1
                return False
        time.sleep(0.1)


def _budget_rule(answer: httpx.Response) -> str | None:
    """The first budget or cost rule among the answer's reasons, if any."""
    try:
        reasons = answer.json().get("reasons", [])
    except ValueError:
        return None
    rules = [str(r.get("rule", "")) for r in reasons if isinstance(r, dict)]
    return next((r for r in rules if r.startswith(BUDGET_RULES)), None)
