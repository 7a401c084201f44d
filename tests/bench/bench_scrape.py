"""Prometheus scrape cost per enforcer: bytes and series of OPA's /metrics and Envoy's stats.

``python -m tests.bench --only scrape [--quick]``

One enforcer as the fleet runs it: the real OPA with our ext_authz plugin and durable
decision log (shipping to the control plane's co-located audit service), bundles
long-polled from the control plane holding the 10k-tenant bundle (``--quick``: 1k), and
the real Envoy with ext_authz in front of the benchmark's upstream. Traffic first, so every
labelled series a scrape can carry exists: ``REQUESTS`` allowed chat requests spread over
a few tenants, and as many refused (an unknown API key, a model the tenant may not use).
Then each endpoint is fetched as Prometheus would (OPA's ``/metrics`` with its API token,
Envoy's admin ``/stats/prometheus``): the figures are the body's bytes (uncompressed, as
the text format) and its series (sample lines), per endpoint and per enforcer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx

from nexus_dataplane.enforcer import enforcer_spec
from nexus_dataplane.envoy import EnvoyProxy, envoy_config
from nexus_dataplane.opa import OpaServer, new_api_token, opa_config
from nexus_dataplane.process import ManagedProcess
from nexus_runtime.toolchain import find_envoy
from tests.bench.bench_latency import PATH, REQUEST_BODY, Side, _clients
from tests.bench.common import Context, Figure, figure, report
from tests.bench.plane import BenchPlane, bench_upstream, running_plane

NAME = "scrape"
TITLE = "Prometheus scrape cost per enforcer (OPA /metrics + Envoy /stats/prometheus)"

REQUESTS, QUICK_REQUESTS = 200, 40
TENANTS = 4


@dataclasses.dataclass(frozen=True)
class Scrape:
    endpoint: str
    body: bytes

    @property
    def series(self) -> int:
        """Sample lines: one per series (histogram buckets, sums and counts each count)."""
        return sum(1 for line in self.body.splitlines() if line and not line.startswith(b"#"))

    @property
    def families(self) -> int:
        return sum(1 for line in self.body.splitlines() if line.startswith(b"# TYPE "))

    @property
    def nexus_series(self) -> int:
        return sum(1 for line in self.body.splitlines() if line.startswith(b"nexus_"))


def run(ctx: Context) -> list[Figure]:
    generated = ctx.generated(ctx.main_tenants)
    built = ctx.built(ctx.main_tenants)
    workdir = ctx.workdir / NAME
    started: list[ManagedProcess] = []
    with running_plane(ctx, NAME, built) as plane:
        try:
            upstream = bench_upstream(ctx, plane, workdir, started)
            side, opa, admin = _start_enforcer(plane, workdir, upstream.port, started)
            clients = _clients(generated, [side], TENANTS)
            _traffic(side, clients, QUICK_REQUESTS if ctx.quick else REQUESTS)
            scrapes = [
                Scrape("OPA /metrics", _fetch(f"{opa.url}/metrics", opa.api_headers)),
                Scrape(
                    "Envoy /stats/prometheus",
                    _fetch(f"{admin}/stats/prometheus", {}),
                ),
            ]
        finally:
            for proc in reversed(started):
                proc.stop()
    figures = _figures(scrapes, ctx.main_tenants)
    report(ctx.console, TITLE, figures)
    return figures


def _start_enforcer(
    plane: BenchPlane, workdir: Path, upstream_port: int, started: list[ManagedProcess]
) -> tuple[Side, OpaServer, str]:
    """The enforcer's Envoy side, its OPA, and Envoy's admin URL."""
    options = dataclasses.replace(
        plane.stack_options(workdir, with_envoy=True), audit_url=plane.url
    )
    spec = enforcer_spec(options, f"{options.region}-scrape", upstream_port)
    opa = OpaServer(
        options.opa_bin,
        workdir / spec.enforcer_id,
        config=opa_config(spec),
        port=spec.opa_port,
        api_token=new_api_token(),
    )
    started.append(opa)
    opa.start_and_wait(bundles=True, timeout_s=180)
    envoy = EnvoyProxy(
        find_envoy(), workdir / spec.enforcer_id, envoy_config(spec),
        admin_port=spec.envoy_admin_port,
    )  # fmt: skip
    started.append(envoy)
    envoy.start_and_wait()
    side = Side("enforcer", f"http://127.0.0.1:{spec.envoy_port}", {"opa": opa, "envoy": envoy})
    return side, opa, f"http://127.0.0.1:{spec.envoy_admin_port}"


def _traffic(side: Side, clients: list[dict[str, str]], requests: int) -> None:
    """``requests`` allowed calls over the clients, and as many refused ones of two kinds."""
    with httpx.Client(base_url=side.url, timeout=10) as http:
        for n in range(requests):
            headers = clients[n % len(clients)]
            allowed = http.post(PATH, headers=headers, content=REQUEST_BODY)
            if allowed.status_code != httpx.codes.OK:
                raise RuntimeError(f"an allowed request was answered {allowed.status_code}")
            unknown_key = {**headers, "authorization": "Bearer nx-unknown-key"}
            wrong_model = {**headers, "x-nexus-model": "no-such-model"}
            for refused in (unknown_key, wrong_model):
                answer = http.post(PATH, headers=refused, content=REQUEST_BODY)
                if answer.status_code < 400:
                    raise RuntimeError(f"a request meant to be refused got {answer.status_code}")


def _fetch(url: str, headers: dict[str, str]) -> bytes:
    response = httpx.get(url, headers=headers, timeout=30)
    response.raise_for_status()
    return response.content


def _figures(scrapes: list[Scrape], tenants: int) -> list[Figure]:
    note = f"{tenants:,} tenants in the bundle, after traffic"
    figures: list[Figure] = []
    for scrape in scrapes:
        figures.append(figure(NAME, f"{scrape.endpoint} bytes", len(scrape.body), "bytes",
                              note=note))  # fmt: skip
        figures.append(
            figure(
                NAME,
                f"{scrape.endpoint} series",
                scrape.series,
                "count",
                note=f"{scrape.families} families, {scrape.nexus_series} nexus_* series",
            )
        )
    figures.append(
        figure(NAME, "per enforcer: bytes", sum(len(s.body) for s in scrapes), "bytes", note=note)
    )
    figures.append(figure(NAME, "per enforcer: series", sum(s.series for s in scrapes), "count"))
    return figures
