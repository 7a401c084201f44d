"""Budget overshoot: concurrent clients hammer a tenant near its cap through Envoy.

Set-up: the control plane (as in the budget benchmark: in-process spend store, the
product's default state debounce) with the 10k-tenant bundle, and one enforcer (real
OPA + real Envoy with ext_authz) in front of the benchmark's fast upstream.

One tenant is prefilled until ``ROOM`` worst cases are left under its monthly cap,
and the benchmark waits until the enforcer refuses a chat ``ROOM + 1`` worst cases
large (the state bundle carries the remaining figure). Then ``CLIENTS`` clients each
loop: a chat on gpt-4o with ``max_tokens = MAX_TOKENS`` (worst case ``W``); when
allowed, the call "takes" ``CALL_S`` and its usage is reported at the worst case
``W`` (the adversarial outcome), as a gateway reports a call once it settles; the
loop ends at the first budget refusal. The figures are the spend admitted beyond the
cap, in USD and in worst cases, beside the clients in flight: without the worst-case
check every request of the burst until the state catches up would pass whatever its
size; with it, only those whose worst case fits what was last published.

The burst runs twice, on two tenants, each through its own enforcer: first with the
enforcer's budget reservations off (the policy's check alone: every request of the burst
is checked against the same published figure until the state catches up), then on (the
default: each admitted chat's worst case is held against its budgets until a state read
after it ended counts its spend, so the burst cannot admit past what was left).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import httpx

from nexus_control.access.tokens import Role, create_token
from nexus_dataplane.enforcer import EnforcerStack
from tests.bench.common import Context, Figure, figure, report
from tests.bench.generate import Credential
from tests.bench.plane import BenchPlane, running_plane
from tests.bench.upstream import FastUpstream

NAME = "overshoot"
TITLE = "Budget overshoot: concurrent clients near the cap"

CLIENTS, QUICK_CLIENTS = 50, 10
MAX_TOKENS = 100_000
"""gpt-4o's output at $10 per million tokens: $1 of the worst case."""
INPUT_USD_PER_MTOK, OUTPUT_USD_PER_MTOK = 2.5, 10.0
"""gpt-4o's price in bundles/gateway/models.yaml."""
ROOM = 10
"""Worst cases left under the cap when the burst starts."""
CALL_S = 0.5
SETTLE_TIMEOUT_S = 15.0
BURST_TIMEOUT_S = 60.0
PATH = "/v1/chat/completions"
BODY = json.dumps({"max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]})
BUDGET_RULES = ("nexus.budget.", "nexus.cost.")


def worst_case_usd(body: str) -> float:
    micro = math.ceil(len(body.encode()) * INPUT_USD_PER_MTOK + MAX_TOKENS * OUTPUT_USD_PER_MTOK)
    return micro / 1_000_000


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    clients = QUICK_CLIENTS if ctx.quick else CLIENTS
    creds = [c for c in generated.pick(on_hard_cap=("refuse",)) if c.monthly_cap_usd >= 10 * ROOM]
    worst = worst_case_usd(BODY)
    figures: list[Figure] = []
    with running_plane(ctx, NAME, built) as plane:
        for cred, reservations in ((creds[0], False), (creds[1], True)):
            figures += _measure(ctx, plane, cred, clients, worst, reservations=reservations)
    report(ctx.console, TITLE, figures)
    return figures


def _measure(
    ctx: Context,
    plane: BenchPlane,
    cred: Credential,
    clients: int,
    worst: float,
    *,
    reservations: bool,
) -> list[Figure]:
    mode = "with reservations" if reservations else "without reservations"
    with (
        _enforcer(ctx, plane, reservations=reservations) as gateway,
        httpx.Client(base_url=gateway, timeout=10) as client,
    ):
        _report_for(plane, cred.tenant)
        prefill = round(cred.monthly_cap_usd - ROOM * worst, 6)
        answer = plane.usage(cred.tenant, prefill, model="gpt-4o")
        if answer.status_code != httpx.codes.ACCEPTED:
            raise RuntimeError(f"{cred.tenant}: the prefill report was refused: {answer.text}")
        _wait_for_state(client, cred)
        # The probe that one worst case still fits was admitted (and, with reservations,
        # held) like any chat; its spend counts too, at the worst case.
        if plane.usage(cred.tenant, worst, model="gpt-4o").status_code != 202:
            raise RuntimeError("the probe's usage report was refused")
        admitted, elapsed = _burst(plane, gateway, cred, clients, worst)
    spent = prefill + (admitted + 1) * worst
    over = spent - cred.monthly_cap_usd
    return [
        figure(
            NAME,
            f"requests admitted in the burst, {mode}",
            admitted,
            "",
            note=f"{ROOM - 1} fit the cap after the probe",
        ),
        figure(
            NAME,
            f"spend admitted beyond the cap, {mode}",
            max(over, 0.0),
            "USD",
            note=f"worst case ${worst:.6f} each; cap ${cred.monthly_cap_usd:,.2f}",
        ),
        figure(
            NAME,
            f"overshoot in worst cases, {mode}",
            max(over, 0.0) / worst,
            "",
            target=("<=", float(clients)) if reservations else None,
            note=f"{clients} clients in flight, calls of {CALL_S:.1f} s, burst {elapsed:.1f} s",
        ),
    ]


@contextmanager
def _enforcer(ctx: Context, plane: BenchPlane, *, reservations: bool) -> Iterator[str]:
    workdir = ctx.workdir / NAME / ("reserving" if reservations else "unreserved")
    upstream = FastUpstream(workdir / "upstream")
    upstream.start_and_wait()
    options = replace(
        plane.stack_options(workdir / "dataplane", with_envoy=True),
        budget_reservations=reservations,
    )
    stack = EnforcerStack(options, count=1, upstream=upstream)
    try:
        stack.start(wait_for_bundles=True, timeout_s=180)
        yield stack.enforcers[0].gateway_url
    finally:
        stack.stop()
        upstream.stop()


def _report_for(plane: BenchPlane, tenant: str) -> None:
    """Report usage with a gateway token scoped to ``tenant`` (the harness's covers the
    example bundle's tenants, not the generated ones)."""
    assert plane.plane is not None
    with plane.plane.db.session() as session:
        token, _ = create_token(
            session, name="bench-overshoot-gateway", role=Role.GATEWAY, tenants=[tenant]
        )
    plane.tokens[Role.GATEWAY.value] = token


def _chat(client: httpx.Client, cred: Credential, body: str) -> httpx.Response:
    return client.post(
        PATH,
        headers={
            "authorization": f"Bearer {cred.plain}",
            "x-nexus-tenant": cred.tenant,
            "x-nexus-model": "gpt-4o",
            "content-type": "application/json",
        },
        content=body.encode(),
    )


def _budget_refusal(response: httpx.Response) -> bool:
    if response.status_code != httpx.codes.TOO_MANY_REQUESTS:
        return False
    reasons = json.loads(response.content)["reasons"]
    return any(str(r["rule"]).startswith(BUDGET_RULES) for r in reasons)


def _wait_for_state(client: httpx.Client, cred: Credential) -> None:
    """Until the enforcer refuses a chat one worst case larger than what is left, then
    until one worst case is admitted. The large chats admitted before the prefill reached
    the enforcer are held (with reservations) until a state read after they ended counts
    them, which the control plane's trailing rebuild publishes: the burst starts from an
    enforcer holding only the probe."""
    too_big = BODY.replace(str(MAX_TOKENS), str((ROOM + 1) * MAX_TOKENS))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not _budget_refusal(_chat(client, cred, too_big)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cred.tenant}: the prefill never reached the enforcer")
        time.sleep(0.05)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (probe := _chat(client, cred, BODY)).status_code != httpx.codes.OK:
        if not _budget_refusal(probe) or time.monotonic() > deadline:
            raise RuntimeError(f"{cred.tenant}: one worst case should still fit: {probe.text}")
        time.sleep(0.25)


def _burst(
    plane: BenchPlane, gateway: str, cred: Credential, clients: int, worst: float
) -> tuple[int, float]:
    lock = threading.Lock()
    admitted = [0]
    start = time.monotonic()

    def hammer(_: int) -> None:
        with httpx.Client(base_url=gateway, timeout=10) as client:
            while time.monotonic() - start < BURST_TIMEOUT_S:
                response = _chat(client, cred, BODY)
                if _budget_refusal(response):
                    return
                if response.status_code != httpx.codes.OK:
                    raise RuntimeError(f"unexpected answer {response.status_code}")
                with lock:
                    admitted[0] += 1
                time.sleep(CALL_S)
                if plane.usage(cred.tenant, worst, model="gpt-4o").status_code != 202:
                    raise RuntimeError("a usage report was refused")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(hammer, range(clients)))
    return admitted[0], time.monotonic() - start
