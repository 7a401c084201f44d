"""Budget: the usage report that crosses a tenant's hard cap -> its first refusal through Envoy.

Set-up: the control plane (on a thread, as in the e2e harness, in-process
spend store, the product's default state debounce) with the 10k-tenant
bundle, and one enforcer (real OPA + real Envoy with ext_authz) in front of
the benchmark's fast upstream.

Each trial takes a different tenant (alternating ``onHardCap: refuse``, which
is refused with 429, and ``disable``, refused with 403 ``tenant_disabled``):
a chat request through Envoy must be allowed; a first usage report brings
the tenant to 95 % of its cap, and the benchmark waits until Envoy's answers
carry the soft-cap warning (so the state pipeline is idle and up to date);
then the clock starts (``perf_counter``), the cap-crossing report is posted
(``POST /v1/usage`` as the gateway), and a chat request is sent through Envoy
every 10 ms until one is refused with a budget reason. The figure is the time
from the start of that POST to the arrival of the first refusal.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from nexus_dataplane.enforcer import EnforcerStack
from tests.bench.common import Context, Figure, figure, percentile, report
from tests.bench.generate import Credential
from tests.bench.plane import BenchPlane, running_plane
from tests.bench.upstream import FastUpstream

NAME = "budget"
TITLE = "Cap-crossing usage report -> first refusal through Envoy"

TRIALS, QUICK_TRIALS = 12, 3
PROBE_S = 0.01
SETTLE_TIMEOUT_S = 15.0
REFUSAL_TIMEOUT_S = 15.0
TIME_BUDGET_S = 300.0
TARGET_S = 2.0
PREFILL = 0.95
CROSSING = 0.10
PATH = "/v1/chat/completions"
WARNING_HEADER = "x-nexus-budget-warning"
EXPECTED = {"refuse": 429, "disable": 403}


@dataclass(frozen=True)
class Trial:
    tenant: str
    on_hard_cap: str
    usage_call_s: float
    refused_s: float | None
    status: int | None
    probes: int


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    trials_wanted = QUICK_TRIALS if ctx.quick else TRIALS
    candidates = _candidates(generated.pick(jurisdictions=("eu", None)), trials_wanted)
    trials: list[Trial] = []
    started = time.monotonic()
    with (
        running_plane(ctx, "budget", built) as plane,
        _enforcer(ctx, plane) as gateway,
        httpx.Client(base_url=gateway, timeout=10) as client,
    ):
        for cred in candidates:
            if time.monotonic() - started > TIME_BUDGET_S:
                break
            trial = _trial(plane, client, cred)
            trials.append(trial)
            ctx.console.print(
                f"  {cred.tenant} ({cred.on_hard_cap}): usage call "
                f"{trial.usage_call_s * 1000:.0f} ms, refused after "
                + (f"{trial.refused_s:.3f} s" if trial.refused_s is not None else "never")
                + f" (status {trial.status}, {trial.probes} probes)"
            )
    figures = _figures(trials, generated.tenants)
    report(ctx.console, TITLE, figures)
    return figures


def _candidates(creds: list[Credential], count: int) -> list[Credential]:
    """``count`` tenants, alternating refuse and disable while both are available."""
    by_kind = {kind: [c for c in creds if c.on_hard_cap == kind] for kind in EXPECTED}
    out: list[Credential] = []
    while len(out) < count and any(by_kind.values()):
        for kind in EXPECTED:
            if by_kind[kind] and len(out) < count:
                out.append(by_kind[kind].pop(0))
    return out


@contextlib.contextmanager
def _enforcer(ctx: Context, plane: BenchPlane) -> Iterator[str]:
    workdir = ctx.workdir / "budget" / "dataplane"
    upstream = FastUpstream(workdir / "upstream")
    upstream.start_and_wait()
    stack = EnforcerStack(plane.stack_options(workdir, with_envoy=True), count=1, upstream=upstream)
    try:
        stack.start(wait_for_bundles=True, timeout_s=180)
        yield stack.enforcers[0].gateway_url
    finally:
        stack.stop()
        upstream.stop()


def _chat(client: httpx.Client, cred: Credential) -> httpx.Response:
    return client.post(
        PATH,
        headers={
            "authorization": f"Bearer {cred.plain}",
            "x-nexus-tenant": cred.tenant,
            "x-nexus-model": "gpt-4o",
            "content-type": "application/json",
        },
        content=b'{"messages":[{"role":"user","content":"hello"}]}',
    )


def _budget_refusal(response: httpx.Response) -> bool:
    if response.status_code not in EXPECTED.values():
        return False
    try:
        reasons = json.loads(response.content)["reasons"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(str(r.get("rule", "")).startswith("nexus.budget.") for r in reasons)


def _trial(plane: BenchPlane, client: httpx.Client, cred: Credential) -> Trial:
    first = _chat(client, cred)
    if first.status_code != httpx.codes.OK:
        raise RuntimeError(f"{cred.tenant}: a chat request was refused before any spend: {first}")
    prefill = plane.usage(cred.tenant, round(cred.monthly_cap_usd * PREFILL, 2))
    if prefill.status_code != httpx.codes.ACCEPTED:
        raise RuntimeError(f"usage report refused: {prefill.status_code} {prefill.text}")
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while WARNING_HEADER not in _chat(client, cred).headers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cred.tenant}: no soft-cap warning {SETTLE_TIMEOUT_S:.0f} s after")
        time.sleep(0.05)

    start = time.perf_counter()
    crossing = plane.usage(cred.tenant, round(cred.monthly_cap_usd * CROSSING, 2))
    usage_call_s = time.perf_counter() - start
    if crossing.status_code != httpx.codes.ACCEPTED or crossing.json().get("ratio", 0) < 1:
        raise RuntimeError(f"the crossing report did not cross: {crossing.text}")
    probes = 0
    while time.perf_counter() - start < REFUSAL_TIMEOUT_S:
        response = _chat(client, cred)
        probes += 1
        if _budget_refusal(response):
            return Trial(
                cred.tenant,
                cred.on_hard_cap,
                usage_call_s,
                time.perf_counter() - start,
                response.status_code,
                probes,
            )
        time.sleep(PROBE_S)
    return Trial(cred.tenant, cred.on_hard_cap, usage_call_s, None, None, probes)


def _figures(trials: list[Trial], tenants: int) -> list[Figure]:
    refused = [t.refused_s for t in trials if t.refused_s is not None]
    never = len(trials) - len(refused)
    worst = max(refused) if refused and not never else float("inf")
    calls = [t.usage_call_s for t in trials]
    kinds = ", ".join(
        f"{kind}: {sum(1 for t in trials if t.on_hard_cap == kind)}" for kind in EXPECTED
    )
    return [
        figure(
            NAME,
            "report -> first refusal: p50",
            percentile(refused, 50),
            "s",
            note=f"{len(trials)} trials, one tenant each ({kinds}); {tenants:,}-tenant bundle",
        ),
        figure(
            NAME,
            "report -> first refusal: p99",
            percentile(refused, 99) if not never else float("inf"),
            "s",
            target=("<", TARGET_S),
            note="nearest rank (with < 100 trials, the max)",
        ),
        figure(
            NAME,
            "report -> first refusal: max",
            worst,
            "s",
            note=f"trials never refused within {REFUSAL_TIMEOUT_S:.0f} s: {never}",
        ),
        figure(
            NAME,
            "usage report call (POST /v1/usage): p50",
            percentile(calls, 50) * 1000,
            "ms",
            note=f"max {max(calls, default=float('nan')) * 1000:.0f} ms",
        ),
    ]
