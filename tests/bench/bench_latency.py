"""Added latency: Envoy + ext_authz + OPA versus Envoy alone, same upstream, same run.

Set-up: the control plane (on a thread, as in the e2e harness) publishes the
10k-tenant bundle; one enforcer, rendered by the data plane's own
``enforcer_spec``/``opa_config``/``envoy_config``, runs the real OPA (bundles
long-polled from the control plane, signatures verified) and the real Envoy
with ext_authz. A second Envoy from ``envoy_config(spec, with_ext_authz=False)``
is the baseline: the same listener, route and upstream, without the filter.
Both proxy to the same upstream: by default ``tests/bench/upstream.py``, an
asyncio responder (the data plane's ThreadingHTTPServer stand-in cannot keep
up: see ``--upstream``); with ``--upstream direct`` both Envoys answer with
``direct_response`` and no upstream cost at all.

A third side is the architecture's floor, **OPA NOP**: the same Envoy
configuration with ext_authz to a second OPA running our plugin with a
policy that allows everything (no bundles). Both OPA sides log every
decision (OPA's console decision logger into the process's log file: the
event built, masked and encoded in OPA, no upload to share the CPUs with),
so the ratios compare decision cost with decision cost: the NOP's OPA CPU
per request against Envoy alone's, and the gateway policy's against both.

Traffic: real gateway requests that OPA allows, ``POST /v1/chat/completions``
with a tenant's API key, its tenant header, a model and a small JSON body,
one tenant per generator process, sent open loop at constant rates over
HTTP/1.1 keep-alive (see ``loadgen`` for why not wrk or h2load). Both sides
run at 1k and 3k rps, and each climbs a ladder of rates until it no longer
sustains one. Each step is measured after a warm-up; the two sides
alternate at every step. Latency figures are the service time (request sent
to answer read; free of coordinated omission since sending never waits on
the proxy): p50 / p90 / p99 / max. The time from when each request was due
(generator lateness included) is in the notes and decides whether a rate is
sustained. CPU per request of OPA and Envoy comes from ``/proc/<pid>/stat``
over each step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nexus_contract.wire import DECISION_PATH, EXT_AUTHZ_PLUGIN
from nexus_dataplane.enforcer import enforcer_spec
from nexus_dataplane.envoy import EnvoyProxy, envoy_config
from nexus_dataplane.opa import OpaServer, opa_config
from nexus_dataplane.process import ManagedProcess, free_port
from nexus_dataplane.spec import EnforcerSpec
from nexus_dataplane.upstream import Upstream
from nexus_runtime.toolchain import find_envoy
from tests.bench.common import (
    Context,
    Deadline,
    Figure,
    children_cpu_seconds,
    cpu_seconds,
    figure,
    judged,
    report,
)
from tests.bench.generate import GeneratedBundle
from tests.bench.loadgen import LoadResult, constant_rate, openloop_binary
from tests.bench.plane import BenchPlane, bench_upstream, running_plane
from tests.bench.profile import PROFILE_RATE, PROFILE_SECONDS, profile_under_load
from tests.bench.upstream import BODY

NAME = "latency"
TITLE = "Added latency of ext_authz + OPA (open-loop constant rate)"

PATH = "/v1/chat/completions"
REQUEST_BODY = b'{"messages":[{"role":"user","content":"Summarise the Q3 support tickets."}]}'
WINDOW_S, WARMUP_S, CLIENTS = 10.0, 2.0, 4
QUICK_WINDOW_S, QUICK_WARMUP_S, QUICK_CLIENTS = 3.0, 1.0, 2
LADDER = (250, 500, 1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000, 16_000)
QUICK_LADDER = (1_000, 3_000)
MUST = (1_000, 3_000)
"""Rates both sides always run, sustained or not: the targets are stated at them."""
TIME_BUDGET_S = 420.0
ADDED_P99_TARGET_MS = 2.0
COLLAPSE_FACTOR = 5.0
COLLAPSE_FLOOR_MS = 10.0
"""No tail collapse at 3k: sustained, and p99 <= max(5 x its 1k p99, 10 ms)."""

BASELINE = "envoy alone"
NOP = "envoy + ext_authz + opa nop"
AUTHZ = "envoy + ext_authz + opa"
SIDES = (BASELINE, NOP, AUTHZ)
NOP_POLICY = """package nexus.envoy.authz

default decision := {"allowed": true, "http_status": 200, "headers": {}}
"""
"""Every request allowed, in the decision shape the plugin expects, nothing read from input."""
DECISION_LOGS: dict[str, Any] = {"console": True}
"""Decision logging of both OPA sides (where the enforcer's config has no audit service)."""
NOP_CPU_TARGET = 1.5
"""The NOP's OPA CPU per Check <= 1.5 x Envoy alone's CPU per request (issue 11)."""
AUTHZ_OVER_NOP_TARGET = 2.0
AUTHZ_OVER_ENVOY_TARGET = 3.0


@dataclass
class Side:
    name: str
    url: str
    processes: dict[str, ManagedProcess]


@dataclass(frozen=True)
class Step:
    result: LoadResult
    cpu_ms_per_request: dict[str, float]


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    workdir = ctx.workdir / "latency"
    started: list[ManagedProcess] = []
    with running_plane(ctx, "latency", built) as plane:
        upstream = bench_upstream(ctx, plane, workdir, started)
        try:
            sides = _start_sides(ctx, plane, workdir, upstream, started)
            clients = _clients(generated, sides, QUICK_CLIENTS if ctx.quick else CLIENTS)
            if ctx.profile_dir is not None:
                _profile(ctx, ctx.profile_dir, sides, clients, workdir)
                return []
            figures = _measure(ctx, sides, clients, workdir, generated)
        finally:
            for proc in reversed(started):
                proc.stop()
    report(ctx.console, TITLE, figures)
    return figures


def _start_sides(
    ctx: Context,
    plane: BenchPlane,
    workdir: Path,
    upstream: Upstream,
    started: list[ManagedProcess],
) -> list[Side]:
    """The enforcer (OPA + Envoy with ext_authz) and the baseline Envoy."""
    options = plane.stack_options(workdir, with_envoy=True)
    spec = enforcer_spec(options, f"{plane.region}-bench", upstream.port)
    config = opa_config(spec)
    config.setdefault("decision_logs", DECISION_LOGS)
    opa = OpaServer(
        options.opa_bin,
        workdir / spec.enforcer_id,
        config=config,
        port=spec.opa_port,
        args=_pprof(ctx),
    )
    started.append(opa)
    opa.start_and_wait(bundles=True, timeout_s=180)
    envoy = EnvoyProxy(
        find_envoy(),
        workdir / spec.enforcer_id,
        _maybe_direct(ctx, envoy_config(spec)),
        admin_port=spec.envoy_admin_port,
    )
    started.append(envoy)
    envoy.start_and_wait()
    base = dataclasses.replace(
        spec,
        enforcer_id=f"{spec.enforcer_id}-baseline",
        envoy_port=free_port(),
        envoy_admin_port=free_port(),
    )
    baseline = EnvoyProxy(
        find_envoy(),
        workdir / base.enforcer_id,
        _maybe_direct(ctx, envoy_config(base, with_ext_authz=False)),
        admin_port=base.envoy_admin_port,
    )
    started.append(baseline)
    baseline.start_and_wait()
    nop_spec = dataclasses.replace(
        spec,
        enforcer_id=f"{spec.enforcer_id}-nop",
        grpc_port=free_port(),
        opa_port=free_port(),
        envoy_port=free_port(),
        envoy_admin_port=free_port(),
    )
    nop_opa, nop_envoy = _start_nop(ctx, options.opa_bin, workdir, nop_spec, started)
    behind: dict[str, ManagedProcess] = {} if ctx.upstream == "direct" else {"upstream": upstream}
    return [
        Side(BASELINE, f"http://127.0.0.1:{base.envoy_port}", {"envoy": baseline, **behind}),
        Side(
            NOP,
            f"http://127.0.0.1:{nop_spec.envoy_port}",
            {"opa": nop_opa, "envoy": nop_envoy, **behind},
        ),
        Side(
            AUTHZ,
            f"http://127.0.0.1:{spec.envoy_port}",
            {"opa": opa, "envoy": envoy, **behind},
        ),
    ]


def _start_nop(
    ctx: Context, opa_bin: Path, workdir: Path, spec: EnforcerSpec, started: list[ManagedProcess]
) -> tuple[OpaServer, EnvoyProxy]:
    """OPA NOP: our plugin, the allow-everything policy, decision logs on; and its Envoy."""
    home = workdir / spec.enforcer_id
    policy = home / "policy"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "nop.rego").write_text(NOP_POLICY)
    config = {
        "labels": {"region": spec.region, "enforcer": spec.enforcer_id},
        "plugins": {
            EXT_AUTHZ_PLUGIN: {"addr": f"127.0.0.1:{spec.grpc_port}", "path": DECISION_PATH}
        },
        "decision_logs": DECISION_LOGS,
    }
    opa = OpaServer(
        opa_bin, home, config=config, args=[*_pprof(ctx), str(policy)], port=spec.opa_port
    )
    started.append(opa)
    opa.start_and_wait(bundles=False)
    envoy = EnvoyProxy(
        find_envoy(),
        home,
        _maybe_direct(ctx, envoy_config(spec)),
        admin_port=spec.envoy_admin_port,
    )
    started.append(envoy)
    envoy.start_and_wait()
    return opa, envoy


def start_enforcer_side(
    plane: BenchPlane,
    workdir: Path,
    upstream_port: int,
    name: str,
    enforcer: str,
    started: list[ManagedProcess],
    *,
    options: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> Side:
    """One enforcer (real OPA, then real Envoy) of ``plane``'s region as the data plane
    renders it, ``options`` and ``spec`` replaced on the way; without an audit intake its
    decisions go to OPA's console log."""
    stack = dataclasses.replace(plane.stack_options(workdir, with_envoy=True), **(options or {}))
    rendered = dataclasses.replace(enforcer_spec(stack, enforcer, upstream_port), **(spec or {}))
    config = opa_config(rendered)
    config.setdefault("decision_logs", DECISION_LOGS)
    opa = OpaServer(stack.opa_bin, workdir / enforcer, config=config, port=rendered.opa_port)
    started.append(opa)
    opa.start_and_wait(bundles=True, timeout_s=180)
    envoy = EnvoyProxy(
        find_envoy(), workdir / enforcer, envoy_config(rendered),
        admin_port=rendered.envoy_admin_port,
    )  # fmt: skip
    started.append(envoy)
    envoy.start_and_wait()
    return Side(name, f"http://127.0.0.1:{rendered.envoy_port}", {"opa": opa, "envoy": envoy})


def _pprof(ctx: Context) -> list[str]:
    return ["--pprof"] if ctx.profile_dir is not None else []


def _profile(
    ctx: Context, directory: Path, sides: list[Side], clients: list[dict[str, str]], work: Path
) -> None:
    """Each OPA side's CPU and allocation profile at ``PROFILE_RATE`` (``--profile``)."""
    openloop_binary()  # built on first use: not inside the first side's profile window
    for side in sides:
        opa = side.processes.get("opa")
        if not isinstance(opa, OpaServer):
            continue

        def load(seconds: float, side: Side = side) -> LoadResult:
            return constant_rate(
                side.url + PATH,
                clients,
                rate=PROFILE_RATE,
                window_s=seconds,
                warmup_s=0.0,
                workdir=work / "profile" / side.name.replace(" ", "_").replace("+", ""),
                body=REQUEST_BODY,
            )

        before = cpu_seconds(opa.pid)
        summary = profile_under_load(opa.url, side.name, directory, load)
        used = cpu_seconds(opa.pid) - before
        ctx.console.print(
            f"  {side.name}: {PROFILE_RATE} rps for {PROFILE_SECONDS + 2} s, OPA CPU "
            f"{used * 1000 / (PROFILE_RATE * (PROFILE_SECONDS + 2)):.3f} ms/request; "
            f"profiles and top tables in {summary}"
        )


def _maybe_direct(ctx: Context, config: dict[str, Any]) -> dict[str, Any]:
    """With ``--upstream direct``, every route answers itself (200, the upstream's body)."""
    if ctx.upstream != "direct":
        return config
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                for host in flt["typed_config"]["route_config"]["virtual_hosts"]:
                    for route in host["routes"]:
                        route.pop("route", None)
                        route["direct_response"] = {
                            "status": 200,
                            "body": {"inline_string": BODY.decode()},
                        }
    return config


def _clients(generated: GeneratedBundle, sides: list[Side], count: int) -> list[dict[str, str]]:
    """Header sets of ``count`` tenants whose requests both sides answer with 200."""
    clients: list[dict[str, str]] = []
    for cred in generated.pick(jurisdictions=("eu", None), on_hard_cap=("refuse",)):
        headers = {
            "authorization": f"Bearer {cred.plain}",
            "x-nexus-tenant": cred.tenant,
            "x-nexus-model": "chat-default" if cred.plan == "enterprise" else "gpt-4o",
            "content-type": "application/json",
        }
        statuses = [
            httpx.post(side.url + PATH, headers=headers, content=REQUEST_BODY, timeout=10)
            for side in sides
        ]
        if all(r.status_code == httpx.codes.OK for r in statuses):
            clients.append(headers)
        if len(clients) == count:
            return clients
    raise RuntimeError(f"found only {len(clients)} tenants whose requests are allowed")


def _step(ctx: Context, side: Side, clients: list[dict[str, str]], rate: int, work: Path) -> Step:
    before = {name: cpu_seconds(p.pid) for name, p in side.processes.items()}
    before["generator"] = children_cpu_seconds()
    start = time.monotonic()
    result = constant_rate(
        side.url + PATH,
        clients,
        rate=rate,
        window_s=QUICK_WINDOW_S if ctx.quick else WINDOW_S,
        warmup_s=QUICK_WARMUP_S if ctx.quick else WARMUP_S,
        workdir=work,
        body=REQUEST_BODY,
    )
    elapsed = time.monotonic() - start
    sent = rate * elapsed
    used = {name: cpu_seconds(p.pid) - before[name] for name, p in side.processes.items()}
    used["generator"] = children_cpu_seconds() - before["generator"]
    cpu = {name: seconds * 1000 / sent if sent else 0.0 for name, seconds in used.items()}
    ctx.console.print(
        f"  {side.name:<24} {rate:>6,} rps: service {result.service_ms.text()}; "
        f"due-to-end p99 {result.corrected_ms.p99:.3f} ms; {result.describe()}; CPU/request "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in cpu.items())
        + ("" if result.sustained else "  [bold]NOT SUSTAINED[/bold]")
    )
    return Step(result, cpu)


def _measure(
    ctx: Context,
    sides: list[Side],
    clients: list[dict[str, str]],
    workdir: Path,
    generated: GeneratedBundle,
) -> list[Figure]:
    ladder = QUICK_LADDER if ctx.quick else LADDER
    deadline = Deadline(TIME_BUDGET_S)
    steps: dict[str, dict[int, Step]] = {side.name: {} for side in sides}
    highest: dict[str, int | None] = {side.name: None for side in sides}
    climbing = {side.name for side in sides}
    for index, rate in enumerate(ladder):
        # Every side goes first in turn, so none always runs after the same one.
        shift = index % len(sides)
        order = sides[shift:] + sides[:shift]
        for side in order:
            if side.name not in climbing and rate not in MUST:
                continue
            if deadline.expired and rate not in MUST:
                continue
            work = workdir / "load" / f"{side.name.replace(' ', '_').replace('+', '')}-{rate}"
            step = _step(ctx, side, clients, rate, work)
            steps[side.name][rate] = step
            if side.name in climbing:
                if step.result.sustained:
                    highest[side.name] = rate
                else:
                    climbing.discard(side.name)
        if not climbing and rate >= max(MUST):
            break
    ctx.console.print(
        f"  set-up: {generated.tenants:,}-tenant bundle from the control plane; upstream: "
        f"{ctx.upstream}; {len(clients)} generator processes (HTTP/1.1), one tenant each"
    )
    return _figures(steps, highest)


def _figures(steps: dict[str, dict[int, Step]], highest: dict[str, int | None]) -> list[Figure]:
    figures: list[Figure] = []
    for rate in MUST:
        for name in SIDES:
            step = steps[name].get(rate)
            if step is None:
                continue
            r = step.result
            cpu = ", ".join(f"{k} {v:.3f} ms" for k, v in step.cpu_ms_per_request.items())
            figures.append(
                figure(
                    NAME,
                    f"{name} @ {rate // 1000}k rps: p99",
                    r.service_ms.p99,
                    "ms",
                    note=f"p50/p90/p99/max {r.service_ms.text()}; from due: "
                    f"{r.corrected_ms.text()}; {r.describe()}; CPU/request {cpu}",
                )
            )
    base, authz = steps[BASELINE].get(1_000), steps[AUTHZ].get(1_000)
    if base is not None and authz is not None:
        b, a = base.result, authz.result
        figures.append(
            figure(
                NAME,
                "added p99 @ 1k rps",
                a.service_ms.p99 - b.service_ms.p99,
                "ms",
                target=("<", ADDED_P99_TARGET_MS),
                note=f"p99 with ext_authz minus p99 without; added p50 "
                f"{a.service_ms.p50 - b.service_ms.p50:.3f} ms; from due: added p99 "
                f"{a.corrected_ms.p99 - b.corrected_ms.p99:.3f} ms"
                + ("" if a.sustained else "; the ext_authz side did NOT sustain 1k rps"),
            )
        )
        per_request = authz.cpu_ms_per_request
        figures.append(
            figure(
                NAME,
                "OPA CPU per request @ 1k rps",
                per_request.get("opa"),
                "ms",
                note="with ext_authz, all processes: "
                + ", ".join(f"{k} {v:.3f}" for k, v in per_request.items())
                + f" ms (sum {sum(per_request.values()):.2f} ms; 2 CPUs at 1k rps give 2 ms)",
            )
        )
    figures.extend(_ratios(steps))
    one, three = steps[AUTHZ].get(1_000), steps[AUTHZ].get(3_000)
    if one is not None and three is not None:
        p99_1k, r3 = one.result.service_ms.p99, three.result
        bound = max(COLLAPSE_FACTOR * p99_1k, COLLAPSE_FLOOR_MS)
        figures.append(
            judged(
                NAME,
                "ext_authz p99 @ 3k rps (no tail collapse)",
                r3.service_ms.p99,
                "ms",
                f"sustained, <= {bound:.1f} ms",
                r3.sustained and r3.service_ms.p99 <= bound,
                note=f"{r3.service_ms.p99 / p99_1k:.1f}x its p99 at 1k; max "
                f"{r3.service_ms.max:.2f} ms; {r3.describe()}",
            )
        )
    for name in SIDES:
        top = highest[name]
        step = steps[name].get(top) if top is not None else None
        tried = ", ".join(f"{k:,}" for k in sorted(steps[name]))
        figures.append(
            figure(
                NAME,
                f"{name}: highest sustained rate",
                float(top) if top is not None else None,
                "rps",
                note=(f"p50/p90/p99/max {step.result.service_ms.text()}; " if step else "")
                + f"tried {tried} rps; sustained: <= 0.1 % lost, p99 from due <= 50 ms",
            )
        )
    return figures


def _ratios(steps: dict[str, dict[int, Step]]) -> list[Figure]:
    """CPU per request of each OPA side against Envoy alone's and against the NOP, per rate."""
    figures: list[Figure] = []
    for rate in MUST:
        base, nop, authz = (steps[name].get(rate) for name in SIDES)
        if base is None or nop is None or authz is None:
            continue
        envoy_ms = base.cpu_ms_per_request.get("envoy", 0.0)
        nop_ms = nop.cpu_ms_per_request.get("opa", 0.0)
        authz_ms = authz.cpu_ms_per_request.get("opa", 0.0)
        comparable = base.result.sustained and nop.result.sustained and authz.result.sustained
        served = (
            f"sustained: envoy alone {base.result.sustained}, nop {nop.result.sustained}, "
            f"ext_authz {authz.result.sustained}"
        ) + (
            "" if comparable else "; NOT judged: a side that sheds or queues costs less per request"
        )
        at = f"@ {rate // 1000}k rps"
        figures.append(
            figure(
                NAME,
                f"OPA NOP CPU per Check / Envoy alone CPU per request {at}",
                _ratio(nop_ms, envoy_ms),
                "x",
                target=("<=", NOP_CPU_TARGET) if comparable else None,
                note=f"OPA NOP {nop_ms:.3f} ms, Envoy alone {envoy_ms:.3f} ms; NOP side's Envoy "
                f"{nop.cpu_ms_per_request.get('envoy', 0.0):.3f} ms; {served}",
            )
        )
        figures.append(
            figure(
                NAME,
                f"OPA CPU per allowed chat decision / OPA NOP {at}",
                _ratio(authz_ms, nop_ms),
                "x",
                target=("<=", AUTHZ_OVER_NOP_TARGET) if comparable else None,
                note=f"gateway policy {authz_ms:.3f} ms, NOP {nop_ms:.3f} ms; {served}",
            )
        )
        figures.append(
            figure(
                NAME,
                f"OPA CPU per allowed chat decision / Envoy alone {at}",
                _ratio(authz_ms, envoy_ms),
                "x",
                target=("<=", AUTHZ_OVER_ENVOY_TARGET) if comparable else None,
                note=f"gateway policy {authz_ms:.3f} ms, Envoy alone {envoy_ms:.3f} ms; {served}",
            )
        )
    return figures


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None
