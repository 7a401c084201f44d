"""The demo's rate limit step: vandelay's chats are limited to ``rate`` a second over every
enforcer (``bundles/gateway/ratelimits.yaml``), counted by the real envoyproxy/ratelimit in a
real redis-server. A burst over the limit inside one window: ``rate`` chats served, the rest
refused by Envoy with 429, ``retry-after`` and ``x-ratelimit-*`` headers and a JSON reason
with control IDs; each refusal is a line of the enforcer's refusal log and its decision a
leaf of the audit log; once the window is over, vandelay is served again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from nexus_audit.service import LeafNotFoundError
from nexus_audit.storage import StoredLeaf
from nexus_cli.demo.polling import until
from nexus_cli.demo.stack import DemoRun
from nexus_contract.wire import DECISION_ID_HEADER, MODEL_HEADER, TENANT_HEADER
from nexus_dataplane.ratelimit import (
    RATELIMIT_CONTROLS,
    RATELIMIT_RULE,
    RateLimitRule,
    read_refusals,
)

__all__ = ["LIMIT_ID", "RateLimitShown", "show_rate_limit"]

TENANT, KEY, MODEL = "vandelay", "demo-vandelay-chat", "gpt-4o-mini"
LIMIT_ID = "vandelay-chat"
"""The example bundle's shared limit on vandelay's chats (``bundles/gateway/ratelimits.yaml``)."""
OVER = 3
"""Chats the burst sends beyond the limit: each must be refused."""
BURST_ATTEMPTS = 3
"""A burst that straddles a window boundary is counted in two windows and proves nothing:
it is sent again, after the next boundary, at most this many times."""
WINDOW_MARGIN_S = 0.02
DEADLINE_S = 10.0
AUDIT_DEADLINE_S = 30.0
RATELIMIT_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                     "x-ratelimit-reset")  # fmt: skip


@dataclass(frozen=True)
class RateLimitShown:
    ok: bool
    notes: list[str]
    decisions: set[str]
    """Every decision behind the step's chats, the refused ones included (the audit step checks
    each is a leaf of the log)."""


def _rule(run: DemoRun) -> RateLimitRule:
    plan = run.rate_limits
    found = [r for r in plan.rules if r.id == LIMIT_ID] if plan is not None else []
    if not found or found[0].scope != "shared" or found[0].counts != "requests":
        raise RuntimeError(f"the example bundle has no shared request limit {LIMIT_ID!r}")
    return found[0]


def _window(moment: float, unit_s: int) -> int:
    return int(moment // unit_s)


def _burst(chat: Callable[[], httpx.Response], size: int, unit_s: int) -> list[httpx.Response]:
    """``size`` chats at once, right after a window starts, all answered inside that window."""
    for _ in range(BURST_ATTEMPTS):
        time.sleep(unit_s - time.time() % unit_s + WINDOW_MARGIN_S)
        started = time.time()
        with ThreadPoolExecutor(max_workers=size) as pool:
            answers = list(pool.map(lambda _: chat(), range(size)))
        if _window(started, unit_s) == _window(time.time(), unit_s):
            return answers
    raise RuntimeError(f"no burst of {size} chats fitted in one {unit_s} s window")


def _reason(refused: httpx.Response) -> str:
    body = refused.json()
    (reason,) = body["reasons"]
    headers = ", ".join(f"{h}: {refused.headers.get(h, '?')}" for h in RATELIMIT_HEADERS)
    return f"{headers}; body {body['error']}: {reason['rule']} [{', '.join(reason['controls'])}]"


def _is_refusal(answer: httpx.Response) -> bool:
    """Envoy's rate limit refusal, whole: its headers and its reason with the control IDs."""
    if answer.status_code != httpx.codes.TOO_MANY_REQUESTS:
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    reasons = body.get("reasons", [])
    return (
        body.get("error") == "rate_limited"
        and bool(body.get("decision_id"))
        and [(r.get("rule"), tuple(r.get("controls", ()))) for r in reasons]
        == [(RATELIMIT_RULE, RATELIMIT_CONTROLS)]
        and all(h in answer.headers for h in RATELIMIT_HEADERS)
        and int(answer.headers["retry-after"]) >= 1
    )


def show_rate_limit(
    run: DemoRun, gateway: str, refusal_dir: Path, keys: dict[str, str]
) -> RateLimitShown:
    """Burst over vandelay's shared limit, show the refusals and where they are logged, and
    vandelay served again after the window."""
    rule = _rule(run)
    decisions: set[str] = set()
    client = httpx.Client(
        base_url=gateway,
        headers={
            "authorization": f"Bearer {keys[KEY]}",
            TENANT_HEADER: TENANT,
            MODEL_HEADER: MODEL,
        },
        timeout=10,
    )

    def chat() -> httpx.Response:
        answer = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "quote"}]}
        )
        decision = answer.headers.get(DECISION_ID_HEADER)
        if decision is None and answer.status_code == httpx.codes.TOO_MANY_REQUESTS:
            with contextlib.suppress(ValueError):
                decision = answer.json().get("decision_id")
        if decision:
            decisions.add(decision)
        return answer

    started = time.monotonic()
    with client:
        # Envoy opens its gRPC connection to the ratelimit service on the first limited
        # request; on a loaded machine that one may pass the 250 ms timeout (503, closed).
        if until(lambda: chat().status_code == httpx.codes.OK, DEADLINE_S) is None:
            return RateLimitShown(False, [f"{TENANT}'s first chat was never served"], decisions)
        size = rule.rate + OVER
        answers = _burst(chat, size, rule.unit_seconds)
        served = [a for a in answers if a.status_code == httpx.codes.OK]
        refused = [a for a in answers if _is_refusal(a)]
        burst_ok = len(served) == rule.rate and len(refused) == OVER
        notes = [
            f"rate limit {LIMIT_ID} ({rule.rate} chats per {rule.unit}, shared by every "
            f"enforcer through envoyproxy/ratelimit over redis-server): a burst of {size} "
            f"{TENANT} chats in one window → {len(served)} served, {len(refused)} refused "
            + ("by Envoy" if burst_ok else f"[red](expected {rule.rate} and {OVER})[/red]")
        ]
        if not refused:
            return RateLimitShown(False, notes, decisions)
        notes.append(f"the 429: {_reason(refused[0])}")
        retry_after = max(int(a.headers["retry-after"]) for a in refused)
        time.sleep(retry_after)
        again = chat()
    logged_ok = _logged(run, refusal_dir, refused, notes)
    notes.append(
        f"after retry-after ({retry_after} s) {TENANT} is served again: {again.status_code} "
        f"(step took {time.monotonic() - started:.1f} s)"
    )
    return RateLimitShown(
        burst_ok and logged_ok and again.status_code == httpx.codes.OK, notes, decisions
    )


def _logged(
    run: DemoRun, refusal_dir: Path, refused: list[httpx.Response], notes: list[str]
) -> bool:
    """Each refusal is a line of Envoy's refusal log, and its decision a leaf of the audit log."""
    assert run.audit is not None
    audit = run.audit
    ids = {str(a.json()["decision_id"]) for a in refused}

    def lines() -> list[dict[str, object]]:
        return [r for r in read_refusals(refusal_dir) if r.get("decision_id") in ids]

    # Envoy flushes its access logs every second.
    in_file = until(lambda: len(lines()) == len(ids), DEADLINE_S) is not None
    bucket = {LIMIT_ID: TENANT}
    counted = all(r.get("buckets") == bucket and r.get("status") == 429 for r in lines())
    notes.append(
        f"{len(lines())}/{len(ids)} refusals in {refusal_dir.name}/ratelimit-refusals.jsonl "
        f"with their decision id, "
        + (f"each counted in bucket {bucket}" if counted else "[red]not all in its bucket[/red]")
    )

    def leaves() -> list[StoredLeaf]:
        found = []
        for decision_id in sorted(ids):
            with contextlib.suppress(LeafNotFoundError):
                found.append(audit.leaf(decision_id=decision_id))
        return found

    # Envoy counts a request only once OPA allowed it: the decision logged is an allow.
    in_log = until(lambda: len(leaves()) == len(ids), AUDIT_DEADLINE_S) is not None
    logged = sorted(leaves(), key=lambda leaf: leaf.index)
    allowed = all(leaf.allowed for leaf in logged)
    notes.append(
        f"{len(logged)}/{len(ids)} refused requests' decisions are leaves of the audit log "
        f"(#{', #'.join(str(leaf.index) for leaf in logged)}), "
        + (
            "each an allow: OPA allowed the request, Envoy's global rate limit refused it"
            if allowed
            else "[red]not all of them allows[/red]"
        )
    )
    return in_file and counted and in_log and allowed
