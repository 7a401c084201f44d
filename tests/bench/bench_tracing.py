"""The cost of tracing: added p99 at 500 rps with tracing off, at 1 % and at 100 % sampling.

Three enforcers, each the real OPA (bundles long-polled from the control plane) and
the real Envoy with ext_authz, rendered by the data plane's own ``enforcer_spec``,
``opa_config`` and ``envoy_config``, in front of the same upstream: one without a
``TracingSpec`` (no tracer in Envoy, no ``distributed_tracing`` in OPA), one sampling
1 % and one 100 %, both exporting to a real Jaeger v2 on loopback. They run one after
another at 500 rps open loop, the order rotating over rounds, in one run: the figures
are the traced sides' p99 minus the untraced side's, and their ratio.
"""

from __future__ import annotations

from pathlib import Path

from nexus_dataplane.process import ManagedProcess
from nexus_dataplane.spec import TracingSpec
from tests.bench.bench_latency import Side, Step, _clients, _step, start_enforcer_side
from tests.bench.common import Context, Figure, figure, report
from tests.bench.plane import BenchPlane, bench_upstream, running_plane
from tests.fixtures.jaeger import Jaeger

NAME = "tracing"
TITLE = "Added p99 of tracing (Envoy + OPA spans to Jaeger) at 500 rps"

RATE = 500
ROUNDS, QUICK_ROUNDS = 3, 1
CLIENTS, QUICK_CLIENTS = 4, 2
OFF, ONE, ALL = "tracing off", "tracing 1 %", "tracing 100 %"
SAMPLING = {ONE: 1.0, ALL: 100.0}


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    workdir = ctx.workdir / NAME
    started: list[ManagedProcess] = []
    with running_plane(ctx, NAME, built) as plane:
        upstream = bench_upstream(ctx, plane, workdir, started)
        jaeger = Jaeger(workdir / "jaeger")
        started.append(jaeger)
        jaeger.start_and_wait()
        try:
            sides = []
            for name in (OFF, ONE, ALL):
                tracing = jaeger.tracing(SAMPLING[name]) if name in SAMPLING else None
                sides.append(_start_side(plane, workdir, upstream.port, name, tracing, started))
            clients = _clients(generated, sides, QUICK_CLIENTS if ctx.quick else CLIENTS)
            steps: dict[str, list[Step]] = {side.name: [] for side in sides}
            for round_ in range(QUICK_ROUNDS if ctx.quick else ROUNDS):
                order = sides[round_ % 3 :] + sides[: round_ % 3]
                for side in order:
                    work = workdir / "load" / f"{side.name.split()[-1]}-{round_}"
                    steps[side.name].append(_step(ctx, side, clients, RATE, work))
        finally:
            for proc in reversed(started):
                proc.stop()
    figures = _figures(steps)
    report(ctx.console, TITLE, figures)
    return figures


def _start_side(
    plane: BenchPlane,
    workdir: Path,
    upstream_port: int,
    name: str,
    tracing: TracingSpec | None,
    started: list[ManagedProcess],
) -> Side:
    enforcer = f"{plane.region}-{name.split()[-1].replace('%', 'pct')}"
    return start_enforcer_side(
        plane, workdir, upstream_port, name, enforcer, started, options={"tracing": tracing}
    )


def _median_p99(steps: list[Step]) -> float:
    values = sorted(s.result.service_ms.p99 for s in steps)
    return values[len(values) // 2]


def _figures(steps: dict[str, list[Step]]) -> list[Figure]:
    off = _median_p99(steps[OFF])
    sustained = all(s.result.sustained for runs in steps.values() for s in runs)
    figures = [figure(NAME, f"p99 {OFF} @ {RATE} rps", off, "ms", note=f"sustained: {sustained}")]
    for name in (ONE, ALL):
        p99 = _median_p99(steps[name])
        opa_cpu = sum(s.cpu_ms_per_request.get("opa", 0.0) for s in steps[name]) / len(steps[name])
        off_cpu = sum(s.cpu_ms_per_request.get("opa", 0.0) for s in steps[OFF]) / len(steps[OFF])
        figures.append(
            figure(
                NAME,
                f"added p99, {name} vs off @ {RATE} rps",
                p99 - off,
                "ms",
                note=f"p99 {p99:.3f} ms vs {off:.3f} ms (median of rounds); OPA CPU/request "
                f"{opa_cpu:.3f} vs {off_cpu:.3f} ms",
            )
        )
        figures.append(
            figure(NAME, f"p99 ratio, {name} / off @ {RATE} rps", p99 / off if off else None, "x")
        )
    return figures
