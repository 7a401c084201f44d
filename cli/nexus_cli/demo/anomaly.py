"""The demo's spend-anomaly step: a month of stark's ordinary spend, then a day thirty times
its size; the detector flags it, stark's budget action (``onAnomaly``) holds its chats on
models above $5 per million tokens, and bob (an approver) releases the hold with a reason."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from nexus_cli.demo.polling import until
from nexus_cli.demo.stack import DemoRun
from nexus_contract.wire import DECISION_ID_HEADER

__all__ = ["show_anomaly"]

TENANT, KEY, MODEL = "stark", "demo-stark-agent", "gpt-4.1"
HISTORY_DAYS = 30
DAILY_USD = 100.0
SPIKE_USD = 3_000.0
HOLD_RULE = "nexus.budget.anomaly_hold"
DEADLINE_S = 10.0


def _history(usage: httpx.Client, now: datetime) -> None:
    """A month of ordinary days (a little noise, quieter weekends), then today's spike."""
    for back in range(HISTORY_DAYS, 0, -1):
        day = now - timedelta(days=back)
        weekend = 0.5 if day.weekday() >= 5 else 1.0
        _usage(usage, DAILY_USD * weekend * (1 + 0.1 * math.sin(back)), day)
    _usage(usage, SPIKE_USD, now)


def _usage(usage: httpx.Client, cost: float, when: datetime) -> None:
    usage.post(
        "/v1/usage",
        json={
            "request_id": f"demo-anomaly-{uuid.uuid4()}",
            "tenant": TENANT,
            "model": MODEL,
            "tokens": 1_000,
            "cost_usd": round(cost, 2),
            "occurred_at": when.isoformat(),
        },
    ).raise_for_status()


def show_anomaly(
    run: DemoRun, gateway: str, keys: dict[str, str], seen: Callable[[httpx.Response], object]
) -> tuple[bool, list[str]]:
    """Inject the spike, hold, release; whether every stage happened, and notes."""
    assert run.plane is not None
    assert run.server is not None
    last: dict[str, httpx.Response] = {}

    def refused() -> bool:
        answer = httpx.post(
            gateway + "/v1/chat/completions",
            headers={
                "authorization": f"Bearer {keys[KEY]}",
                "x-nexus-tenant": TENANT,
                "x-nexus-model": MODEL,
            },
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64},
            timeout=10,
        )
        seen(answer)
        last["answer"] = answer
        return answer.status_code == 403 and HOLD_RULE in answer.text

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with httpx.Client(
        base_url=run.server.url,
        headers={"authorization": f"Bearer {run.tokens['gateway']}"},
        timeout=10,
    ) as usage:
        _history(usage, now)
    found = [a for a in run.plane.anomalies.scan() if a.tenant == TENANT]
    held = until(refused, DEADLINE_S)
    reason = ""
    if held is not None:
        reason = last["answer"].json().get("reasons", [{}])[0].get("message", "")
    notes = [
        f"{TENANT}: {HISTORY_DAYS} days near ${DAILY_USD:.0f}/day, then ${SPIKE_USD:,.0f} today → "
        + (
            ", ".join(f"{a.kind} found (baseline ${a.baseline_usd:,.0f})" for a in found)
            if found
            else "NO finding"
        ),
        (
            f"held {held:.2f} s after the scan: {TENANT}'s chat on {MODEL} refused 403 "
            f"(decision {last['answer'].headers.get(DECISION_ID_HEADER, '?')[:8]}…): {reason}"
            if held is not None
            else f"{TENANT}'s chat was never held"
        ),
    ]
    with run.api("approver") as approver:
        approver.post(
            f"/v1/budgets/anomaly-holds/{TENANT}/release",
            {"reason": "stark's launch week: the spend was planned (demo)"},
        )
    released = until(lambda: not refused(), DEADLINE_S)
    notes.append(
        "bob (approver) releases the hold with a reason → "
        + (
            f"{TENANT}'s chat served again {released:.2f} s later ({last['answer'].status_code}); "
            "the finding, the hold and the release are audit events"
            if released is not None
            else "still refused"
        )
    )
    return bool(found) and held is not None and released is not None, notes
