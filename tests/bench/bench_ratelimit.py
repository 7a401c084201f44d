"""Rate limits through real Envoy + our ext_authz plugin in OPA + envoyproxy/ratelimit + Redis.

Two figures, from one stack (`tests.fixtures.ratelimit_stack`) in one run:

- accuracy: one tenant offered twice its shared limit (``LIMIT_RPS`` per second)
  for ``WINDOW_S`` seconds, open loop; the admitted rate (200s per second of the
  window) must be within 5 % of the limit;
- cost: the added p99 of the shared rate-limit check at 500 rps, side by side on the
  same Envoy and OPA: a tenant under a limit it never reaches (every request asks
  the ratelimit service) against a tenant no limit applies to (no call), each run
  in turn, and the difference of their service-latency p99s reported.

Run: ``make bench BENCH_ARGS="--only ratelimit"`` (``--quick`` shortens both windows).
"""

from __future__ import annotations

import json

from nexus_control.access.signing_keys import load_signing_key, public_pem
from tests.bench.common import Context, Figure, figure, judged
from tests.bench.loadgen import LoadResult, constant_rate
from tests.fixtures.ratelimit_stack import CHAT, RateLimitStack, rate_limit_stack

__all__ = ["run"]

BENCH = "ratelimit"
LIMIT_RPS = 50
OFFERED_FACTOR = 2
WINDOW_S = 30.0
QUICK_WINDOW_S = 10.0
WARMUP_S = 2.0
COST_RPS = 500
COST_WINDOW_S = 20.0
QUICK_COST_WINDOW_S = 8.0
ACCURACY_TOLERANCE = 0.05
MAX_UNSERVED = 0.01
LIMITED, CHECKED, FREE = "rb-limited", "rb-checked", "rb-free"
RATE_LIMITS = f"""\
apiVersion: policy.nexus.ai/v1
kind: RateLimits
limits:
  - id: bench-shared
    scope: shared
    tenants: [{LIMITED}]
    routes: [chat.completions]
    unit: second
    rate: {LIMIT_RPS}
  - id: bench-checked
    scope: shared
    tenants: [{CHECKED}]
    routes: [chat.completions]
    unit: second
    rate: 1000000
"""
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def _headers(stack: RateLimitStack, tenant: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {stack.plain[tenant]}",
        "x-nexus-tenant": tenant,
        "x-nexus-model": "gpt-4o-mini",
        "content-type": "application/json",
    }


def _load(
    stack: RateLimitStack, ctx: Context, tenant: str, rate: float, window: float
) -> LoadResult:
    return constant_rate(
        f"http://127.0.0.1:{stack.a.port}{CHAT}",
        [_headers(stack, tenant)],
        rate=rate,
        window_s=window,
        warmup_s=WARMUP_S,
        workdir=ctx.workdir / "ratelimit-load" / f"{tenant}-{rate:.0f}",
        body=BODY,
    )


def run(ctx: Context) -> list[Figure]:
    pem = ctx.workdir / "ratelimit-bundle-signing.pub.pem"
    pem.write_text(public_pem(load_signing_key(ctx.keys.signing)))
    window = QUICK_WINDOW_S if ctx.quick else WINDOW_S
    cost_window = QUICK_COST_WINDOW_S if ctx.quick else COST_WINDOW_S
    with rate_limit_stack(
        ctx.workdir / "ratelimit-stack",
        ctx.opa,
        ctx.keys,
        pem,
        rate_limits=RATE_LIMITS,
        tenants=(LIMITED, CHECKED, FREE),
    ) as stack:
        offered = _load(stack, ctx, LIMITED, LIMIT_RPS * OFFERED_FACTOR, window)
        admitted = offered.statuses.get(200, 0) / window
        refused = offered.statuses.get(429, 0)
        ctx.console.print(
            f"offered {LIMIT_RPS * OFFERED_FACTOR} rps for {window:.0f} s: "
            f"admitted {admitted:.1f} rps, {refused} refused (429), statuses "
            f"{dict(sorted(offered.statuses.items()))}"
        )
        # Side by side, in turn: no check, check, no check, check (the better of each pair).
        free: list[LoadResult] = []
        checked: list[LoadResult] = []
        for _ in range(2):
            free.append(_load(stack, ctx, FREE, COST_RPS, cost_window))
            checked.append(_load(stack, ctx, CHECKED, COST_RPS, cost_window))
    free_p99 = min(r.service_ms.p99 for r in free)
    checked_p99 = min(r.service_ms.p99 for r in checked)
    for label, results in (("without", free), ("with", checked)):
        for r in results:
            ctx.console.print(
                f"{COST_RPS} rps {label} the check: service p50/p90/p99/max "
                f"{r.service_ms.text()}; {r.describe()}"
            )
    error = abs(admitted - LIMIT_RPS) / LIMIT_RPS
    # Answers that are neither admitted nor rate limited (503: the enforcer itself could not
    # keep up) never reached the limiter: past 1 % of the offered load, no verdict on it.
    other = sum(n for status, n in offered.statuses.items() if status not in (200, 429))
    offered_total = sum(offered.statuses.values())
    accuracy = (
        judged(
            BENCH,
            "admitted rate's distance from the limit",
            None,
            "%",
            f"<= {ACCURACY_TOLERANCE * 100:.1f} % with the offered load served",
            False,
            note=f"{other} of {offered_total} answers were neither 200 nor 429: "
            f"{dict(sorted(offered.statuses.items()))}",
        )
        if other > MAX_UNSERVED * offered_total
        else figure(
            BENCH,
            "admitted rate's distance from the limit",
            error * 100,
            "%",
            target=("<=", ACCURACY_TOLERANCE * 100),
        )
    )
    # A p99 of the few requests that got through an overloaded stack means nothing.
    unsustained = [r for r in (*free, *checked) if not r.sustained]
    added = checked_p99 - free_p99
    cost = (
        judged(
            BENCH,
            "added p99 of the shared rate-limit check",
            None,
            "ms",
            f"{COST_RPS} rps sustained with and without",
            False,
            note=f"{len(unsustained)} of 4 runs not sustained: "
            + "; ".join(r.describe() for r in unsustained),
        )
        if unsustained
        else figure(
            BENCH,
            "added p99 of the shared rate-limit check",
            added,
            "ms",
            note="same Envoy and OPA, runs interleaved; best p99 of two runs each",
        )
    )
    return [
        figure(
            BENCH,
            f"admitted rate at {OFFERED_FACTOR}x a {LIMIT_RPS} rps shared limit",
            admitted,
            "rps",
            note=f"{window:.0f} s window, {refused} refused with 429",
        ),
        accuracy,
        figure(BENCH, f"p99 at {COST_RPS} rps without a rate-limit check", free_p99, "ms"),
        figure(BENCH, f"p99 at {COST_RPS} rps with the shared check", checked_p99, "ms"),
        cost,
    ]
