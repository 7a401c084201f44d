"""Shadow evaluation's cost on the request path: added p99 at 500 rps through Envoy, 10 % sampled.

Two enforcers, each the real OPA and Envoy rendered by the data plane's own
``enforcer_spec``, ``opa_config`` and ``envoy_config`` (the durable log waiting for its
fsync, as by default), shipping decisions to the same audit intake, in front of the same
upstream: one without shadow evaluation, one evaluating 10 % of its answered Checks against
the region's shadow candidate (a signed revision of the same size, put in shadow through
``POST /v1/shadow``) and logging every outcome as a shadow record. They take turns open loop
over rounds at 500 rps in one run; the figure is the shadow side's p99 minus the other's
(target < 0.1 ms, issue 12), with OPA's CPU per request beside them, and whether both
sustained the rate.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from nexus_cli.client import ControlPlaneClient
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import ManagedProcess
from tests.bench.bench_latency import Side, Step, _clients, _step, start_enforcer_side
from tests.bench.common import Context, Figure, figure, report
from tests.bench.plane import BenchPlane, bench_upstream, running_plane

NAME = "shadow"
TITLE = "Added p99 of shadow evaluation at 10 % sampling, 500 rps (Envoy + OPA, same intake)"
RATE = 500
SAMPLE_PERCENT = 10.0
ROUNDS, QUICK_ROUNDS = 4, 2
CLIENTS, QUICK_CLIENTS = 4, 2
OFF, ON = "shadow off", f"shadow at {SAMPLE_PERCENT:g} %"
SIDES = {OFF: 0.0, ON: SAMPLE_PERCENT}
HOLD_TIMEOUT_S = 120.0
_INFO = re.compile(r'^nexus_shadow_bundle_info\{revision="([^"]+)"\} 1', re.MULTILINE)


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    workdir = ctx.workdir / NAME
    started: list[ManagedProcess] = []
    steps: dict[str, list[Step]] = {name: [] for name in SIDES}
    with running_plane(ctx, NAME, built) as plane:
        try:
            candidate = _shadow_candidate(ctx, plane)
            upstream = bench_upstream(ctx, plane, workdir, started)
            sides = [
                _start_side(plane, workdir, upstream.port, name, n, started)
                for n, name in enumerate(SIDES)
            ]
            _wait_for_candidate(sides[1], candidate)
            clients = _clients(generated, sides, QUICK_CLIENTS if ctx.quick else CLIENTS)
            for round_ in range(QUICK_ROUNDS if ctx.quick else ROUNDS):
                for side in sides[round_ % 2 :] + sides[: round_ % 2]:
                    work = workdir / "load" / f"{sides.index(side)}-{round_}"
                    steps[side.name].append(_step(ctx, side, clients, RATE, work))
        finally:
            for proc in reversed(started):
                proc.stop()
    figures = _figures(steps)
    report(ctx.console, TITLE, figures)
    return figures


def _shadow_candidate(ctx: Context, plane: BenchPlane) -> str:
    """A signed revision in force nowhere, put in shadow for the plane's region."""
    first = plane.build()
    candidate = plane.publish(ctx.built(ctx.main_tenants, variant=1))
    plane.publish(first)
    with ControlPlaneClient(plane.url, plane.tokens["operator"]) as api:
        api.post("/v1/shadow", {"region": plane.region, "revision": candidate,
                                "reason": "bench: shadow cost"})  # fmt: skip
    return candidate


def _start_side(
    plane: BenchPlane,
    workdir: Path,
    upstream_port: int,
    name: str,
    n: int,
    started: list[ManagedProcess],
) -> Side:
    return start_enforcer_side(
        plane, workdir, upstream_port, name, f"{plane.region}-shadow-{n}", started,
        options={"audit_url": plane.url, "shadow_sample_percent": SIDES[name]},
    )  # fmt: skip


def _wait_for_candidate(side: Side, candidate: str) -> None:
    """Until the shadow side's OPA holds the candidate (it polls for it after starting)."""
    opa = side.processes["opa"]
    assert isinstance(opa, OpaServer)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{opa.port}/metrics", timeout=10).text
        if candidate in _INFO.findall(text):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the shadow side never held candidate {candidate[:12]}")


def _median_p99(steps: list[Step]) -> float:
    values = sorted(s.result.service_ms.p99 for s in steps)
    return values[len(values) // 2]


def _opa_cpu(steps: list[Step]) -> float:
    return sum(s.cpu_ms_per_request.get("opa", 0.0) for s in steps) / len(steps)


def _figures(steps: dict[str, list[Step]]) -> list[Figure]:
    base, shadowed = _median_p99(steps[OFF]), _median_p99(steps[ON])
    sustained = all(s.result.sustained for runs in steps.values() for s in runs)
    note = (
        f"p99 {shadowed:.3f} ms vs {base:.3f} ms (median of rounds); OPA CPU/request "
        f"{_opa_cpu(steps[ON]):.3f} vs {_opa_cpu(steps[OFF]):.3f} ms"
        + ("" if sustained else "; not every side sustained the rate")
    )
    return [
        figure(NAME, f"p99, {OFF} @ {RATE} rps", base, "ms", note=f"all sustained: {sustained}"),
        figure(
            NAME,
            f"added p99, {ON} vs {OFF} @ {RATE} rps",
            shadowed - base,
            "ms",
            target=("<", 0.1) if sustained else None,
            note=note,
        ),
    ]
