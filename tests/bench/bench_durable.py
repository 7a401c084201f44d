"""The durable decision log's cost on the request path: added p99 at 500 rps through Envoy.

Three enforcers, each the real OPA and Envoy rendered by the data plane's own
``enforcer_spec``, ``opa_config`` and ``envoy_config``, shipping decisions to the same
audit intake, in front of the same upstream: one with OPA's in-memory uploader (no
durable log: a crash loses its buffer), one with the durable log answering before the
fsync (``wait_for_commit: false``), and one waiting for it (the default: no answer leaves
an enforcer unrecorded). They take turns at 500 rps open loop over rounds, in one run;
the figures are each durable side's p99 minus the in-memory side's (target for the
default: < 1 ms, issue 10), with OPA's CPU per request beside them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nexus_dataplane.enforcer import enforcer_spec
from nexus_dataplane.envoy import EnvoyProxy, envoy_config
from nexus_dataplane.opa import OpaServer, opa_config
from nexus_dataplane.process import ManagedProcess
from nexus_runtime.toolchain import find_envoy
from tests.bench.bench_latency import Side, Step, _clients, _step
from tests.bench.common import Context, Figure, figure, report
from tests.bench.plane import BenchPlane, bench_upstream, running_plane

NAME = "durable"
TITLE = "Added p99 of the durable decision log at 500 rps (Envoy + OPA, same intake)"
RATE = 500
ROUNDS, QUICK_ROUNDS = 3, 1
CLIENTS, QUICK_CLIENTS = 4, 2
MEMORY, NO_WAIT, WAIT = "in-memory uploader", "durable, no wait", "durable, waits for fsync"
SIDES = {MEMORY: (False, False), NO_WAIT: (True, False), WAIT: (True, True)}
"""Each side's (durable log, wait for commit)."""


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    workdir = ctx.workdir / NAME
    started: list[ManagedProcess] = []
    steps: dict[str, list[Step]] = {name: [] for name in SIDES}
    with running_plane(ctx, NAME, built) as plane:
        try:
            upstream = bench_upstream(ctx, plane, workdir, started)
            sides = [
                _start_side(plane, workdir, upstream.port, name, n, started)
                for n, name in enumerate(SIDES)
            ]
            clients = _clients(generated, sides, QUICK_CLIENTS if ctx.quick else CLIENTS)
            for round_ in range(QUICK_ROUNDS if ctx.quick else ROUNDS):
                order = sides[round_ % 3 :] + sides[: round_ % 3]
                for side in order:
                    work = workdir / "load" / f"{sides.index(side)}-{round_}"
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
    n: int,
    started: list[ManagedProcess],
) -> Side:
    durable, wait = SIDES[name]
    options = dataclasses.replace(
        plane.stack_options(workdir, with_envoy=True), audit_url=plane.url
    )
    enforcer = f"{options.region}-durable-{n}"
    spec = dataclasses.replace(
        enforcer_spec(options, enforcer, upstream_port), durable_log=durable, wait_for_commit=wait
    )
    opa = OpaServer(
        options.opa_bin, workdir / enforcer, config=opa_config(spec), port=spec.opa_port
    )
    started.append(opa)
    opa.start_and_wait(bundles=True, timeout_s=180)
    envoy = EnvoyProxy(
        find_envoy(), workdir / enforcer, envoy_config(spec), admin_port=spec.envoy_admin_port
    )
    started.append(envoy)
    envoy.start_and_wait()
    return Side(name, f"http://127.0.0.1:{spec.envoy_port}", {"opa": opa, "envoy": envoy})


def _median_p99(steps: list[Step]) -> float:
    values = sorted(s.result.service_ms.p99 for s in steps)
    return values[len(values) // 2]


def _opa_cpu(steps: list[Step]) -> float:
    return sum(s.cpu_ms_per_request.get("opa", 0.0) for s in steps) / len(steps)


def _figures(steps: dict[str, list[Step]]) -> list[Figure]:
    base = _median_p99(steps[MEMORY])
    sustained = all(s.result.sustained for runs in steps.values() for s in runs)
    figures = [
        figure(NAME, f"p99, {MEMORY} @ {RATE} rps", base, "ms", note=f"sustained: {sustained}")
    ]
    for name in (NO_WAIT, WAIT):
        p99 = _median_p99(steps[name])
        figures.append(
            figure(
                NAME,
                f"added p99, {name} vs {MEMORY} @ {RATE} rps",
                p99 - base,
                "ms",
                target=("<", 1.0) if name == WAIT else None,
                note=f"p99 {p99:.3f} ms vs {base:.3f} ms (median of rounds); OPA CPU/request "
                f"{_opa_cpu(steps[name]):.3f} vs {_opa_cpu(steps[MEMORY]):.3f} ms",
            )
        )
    return figures
