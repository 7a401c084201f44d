"""How long a spent tool approval stays usable on the other enforcers of its region.

Two enforcers (OPA + Envoy each) in one region, the control plane on SQLite.
Each round: an approver issues an approval, the call is allowed through
enforcer 0, the gateway reports the use, and the clock runs until *both*
enforcers refuse the same approval through Envoy. The figure is that window
(report → refused everywhere), which the issue bounds at 2 s; the security
test (`tests/security/test_approval_replay.py`) proves the refusal, this
measures how soon it comes.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from nexus_cli.client import ControlPlaneClient
from tests.bench.common import Context, Figure, figure, median, percentile, report
from tests.fixtures.environment import Environment, credentials_overlay

NAME = "approval_replay"
TITLE = "Spent approval → refused by every enforcer of the region"
TARGET_S = 2.0
ROUNDS = 10
GIVE_UP_S = 30.0
TOOL = "payment-refund"
PATH = f"/v1/tools/{TOOL}:invoke"
CALLER = "apikey:acme-agent"


def _round(env: Environment, n: int) -> float:
    args: dict[str, Any] = {"paymentId": f"pay_bench_{n}", "amountCents": 100, "currency": "EUR"}
    with ControlPlaneClient(env.url, env.tokens["approver"]) as api:
        issued = api.post(
            "/v1/approvals/tools",
            {"tenant": "acme", "tool": TOOL, "arguments": args, "subject": CALLER},
        )

    def call(enforcer: int) -> httpx.Response:
        return env.call(
            "acme-agent",
            "acme",
            "POST",
            PATH,
            body={"arguments": args},
            headers={"x-nexus-approval": issued["token"]},
            enforcer=enforcer,
        )

    first = call(0)
    if first.status_code != 200:
        raise RuntimeError(f"the approved call was refused: {first.status_code} {first.text}")
    start = time.perf_counter()
    used = httpx.post(
        f"{env.url}/v1/approvals/used",
        headers={"authorization": f"Bearer {env.tokens['gateway']}"},
        json={"approval_id": issued["token_id"], "tenant": "acme"},
        timeout=10,
    )
    if used.status_code != 202:
        raise RuntimeError(f"the use was not accepted: {used.status_code} {used.text}")
    refused: set[int] = set()
    while refused != {0, 1}:
        for enforcer in {0, 1} - refused:
            if call(enforcer).status_code == 403:
                refused.add(enforcer)
        if time.perf_counter() - start > GIVE_UP_S:
            raise RuntimeError(f"still usable on some enforcer after {GIVE_UP_S} s")
        time.sleep(0.01)
    return time.perf_counter() - start


def run(ctx: Context) -> list[Figure]:
    rounds = 3 if ctx.quick else ROUNDS
    workdir = ctx.workdir / NAME
    workdir.mkdir(parents=True, exist_ok=True)
    env = Environment(
        workdir=workdir,
        keys=ctx.keys,
        opa=ctx.opa,
        database_url=f"sqlite:///{workdir}/cp.db",
        plain=credentials_overlay(workdir / "credentials"),
        enforcers=2,
    )
    env.start()
    try:
        windows = [_round(env, n) for n in range(rounds)]
    finally:
        env.stop()
    figures = [
        figure(NAME, "report → both enforcers refuse, median", median(windows), "s"),
        figure(
            NAME,
            f"report → both enforcers refuse, worst of {rounds}",
            max(windows),
            "s",
            target=("<", TARGET_S),
        ),
        figure(NAME, "p90", percentile(windows, 90), "s"),
    ]
    report(ctx.console, TITLE, figures)
    return figures
