"""The demo's failover step: a probe reports gpt-4o degraded in the demo's region; acme's
next chats go to gpt-4o's first fallback in acme's plan, inside acme's jurisdiction, with
the reason in the answer; reported healthy, they go back to gpt-4o."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from nexus_cli.demo.polling import until
from nexus_cli.demo.stack import REGION, DemoRun
from nexus_contract.wire import DECISION_ID_HEADER
from nexus_control.access.tokens import Role, create_token

__all__ = ["FALLBACK_HEADER", "show_failover"]

FALLBACK_HEADER = "x-nexus-fallback"
PRIMARY = "gpt-4o"
TENANT, KEY = "acme", "demo-acme-chat"
SWITCH_DEADLINE_S = 10.0


def _probe_token(run: DemoRun) -> str:
    assert run.plane is not None
    with run.plane.db.session() as session:
        token, _ = create_token(session, name="eu-probe", role=Role.PROBE, region=REGION)
    return token


def _report(server: str, token: str, status: str, reason: str) -> None:
    answer = httpx.post(
        f"{server}/v1/health/models",
        json={
            "model": PRIMARY,
            "region": REGION,
            "status": status,
            "reason": reason,
            "observed_at": datetime.now(UTC).isoformat(),
        },
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    answer.raise_for_status()


def show_failover(
    run: DemoRun, gateway: str, keys: dict[str, str], seen: Callable[[httpx.Response], object]
) -> tuple[bool, list[str]]:
    """Degrade gpt-4o in the demo's region and back; whether traffic followed, and notes."""
    assert run.server is not None
    last: dict[str, httpx.Response] = {}

    def chat() -> httpx.Response:
        response = httpx.post(
            gateway + "/v1/chat/completions",
            headers={
                "authorization": f"Bearer {keys[KEY]}",
                "x-nexus-tenant": TENANT,
                "x-nexus-model": PRIMARY,
            },
            timeout=10,
        )
        seen(response)
        last["answer"] = response
        return response

    def routed() -> str | None:
        """The model the upstream was sent, or None for an answer that was not served."""
        answer = chat()
        if answer.status_code != 200:
            refused.append(answer.status_code)
            return None
        return str(answer.json().get("headers", {}).get("x-nexus-route-model", ""))

    refused: list[int] = []

    token = _probe_token(run)
    started = time.monotonic()
    _report(run.server.url, token, "degraded", "5xx rate 12% over 1 min")
    switched = until(lambda: routed() not in (PRIMARY, None), SWITCH_DEADLINE_S)
    answer = last["answer"]
    fallback = answer.json().get("headers", {}).get("x-nexus-route-model", "")
    notes = [
        f"probe: {PRIMARY} degraded in {REGION} (5xx rate 12% over 1 min) → {TENANT}'s chat "
        + (
            f"routed to {fallback} {switched:.2f} s after the report "
            f"({FALLBACK_HEADER}: {answer.headers.get(FALLBACK_HEADER)}, decision "
            f"{answer.headers.get(DECISION_ID_HEADER, '?')[:8]}…), within {TENANT}'s "
            "jurisdiction (with Providers rendered, Envoy's provider clusters hold only its "
            "endpoints: tests/e2e/test_provider_routing.py)"
            if switched is not None
            else "was never routed to a fallback"
        )
    ]
    _report(run.server.url, token, "healthy", "recovered")
    recovered = until(lambda: routed() == PRIMARY, SWITCH_DEADLINE_S)
    notes.append(
        f"probe: {PRIMARY} healthy again → back on {PRIMARY} "
        + (f"{recovered:.2f} s later" if recovered is not None else "NEVER")
        + f" (step took {time.monotonic() - started:.1f} s"
        + (f"; answers not served while polling: {refused}" if refused else "")
        + ")"
    )
    return switched is not None and recovered is not None, notes
