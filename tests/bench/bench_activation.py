"""Activation: CPU-s and memory of one OPA that loads the 10k- and the 100k-tenant bundle.

Each size: the signed policy archive (the one ``build`` measures) and a
state bundle with a spend entry for every tenant (``bench_build
.write_state_bundle``), loaded by a real ``opa run --server`` from files with
signature verification on (``--verification-key``, the bundle-signing
key's public half, the key id the archive was signed with), the GOGC
enforcers run with. The OPA is started, its ``/health?bundles`` polled every
50 ms until both bundles are active, then its CPU time (user + system, from
``/proc/<pid>/stat``) and its resident memory (``VmRSS`` and the peak
``VmHWM`` from ``/proc/<pid>/status``) are read. An OPA with no bundles at
all is measured the same way first, and its CPU is subtracted, so the
figure is what activating the bundles cost: on a fleet where each enforcer
has its own CPU this is the per-enforcer share of a rollout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from nexus_control.access.signing_keys import load_signing_key
from nexus_control.budgets.state import build_state_bundle
from nexus_dataplane.opa import OpaServer
from tests.bench.bench_build import write_state_bundle
from tests.bench.common import Context, Figure, cpu_seconds, figure, median, report
from tests.bench.generate import GeneratedBundle
from tests.fixtures.environment import KEY_ID

NAME = "activation"
TITLE = "Bundle activation in one OPA: CPU-s and resident memory"

FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000,)
RUNS, QUICK_RUNS = 3, 1
POLL_S = 0.05
READY_TIMEOUT_S = 600.0
CPU_TARGET_S = 0.1
"""Issue 11: activation of the 10k-tenant bundle <= 0.1 CPU-s per enforcer."""
RSS_100K_TARGET_MIB = 1024.0
SIGNING_ALG = "RS256"


@dataclass(frozen=True)
class Loaded:
    cpu_s: float
    wall_s: float
    rss_mib: float
    peak_mib: float


def run(ctx: Context) -> list[Figure]:
    work = ctx.workdir / "activation"
    runs = QUICK_RUNS if ctx.quick else RUNS
    idle = [_load(ctx, work / "idle", []) for _ in range(runs)]
    idle_cpu = median([r.cpu_s for r in idle])
    figures = [
        figure(
            NAME,
            "OPA without bundles: CPU-s to ready, RSS",
            idle_cpu,
            "s",
            note=f"RSS {median([r.rss_mib for r in idle]):.0f} MiB; subtracted below",
        )
    ]
    for size in QUICK_SIZES if ctx.quick else FULL_SIZES:
        bundle = ctx.generated(size)
        archive = ctx.built(size).path
        state = _signed_state(ctx, work / f"state-{size}", bundle)
        args = [
            "--verification-key",
            str(ctx.keys.signing_public),
            "--verification-key-id",
            KEY_ID,
            "--signing-alg",
            SIGNING_ALG,
            "--bundle",
            str(archive),
            "--bundle",
            str(state),
        ]
        loaded = [_load(ctx, work / f"opa-{size}", args) for _ in range(runs)]
        label = f"{size // 1000}k"
        cpu = median([r.cpu_s for r in loaded]) - idle_cpu
        rss = median([r.rss_mib for r in loaded])
        spread = ", ".join(f"{r.cpu_s - idle_cpu:.2f}" for r in loaded)
        figures += [
            figure(
                NAME,
                f"{label}: activation CPU-s per OPA",
                cpu,
                "s",
                target=("<=", CPU_TARGET_S) if size == 10_000 else None,
                note=f"median of {len(loaded)} starts ({spread} s); policy archive "
                f"{archive.stat().st_size / 1e6:.1f} MB + state; wall to active "
                f"{median([r.wall_s for r in loaded]):.2f} s",
            ),
            figure(
                NAME,
                f"{label}: OPA RSS with the bundles active",
                rss,
                "MiB",
                target=("<", RSS_100K_TARGET_MIB) if size == 100_000 else None,
                note=f"peak (VmHWM) {median([r.peak_mib for r in loaded]):.0f} MiB",
            ),
        ]
    report(ctx.console, TITLE, figures)
    return figures


def _signed_state(ctx: Context, directory: Path, bundle: GeneratedBundle) -> Path:
    """The benchmark's state document as the control plane serves it: a signed archive."""
    plain = write_state_bundle(directory, bundle)
    document = orjson.loads((plain / "nexus_state" / "data.json").read_bytes())
    signed = build_state_bundle(document, key=load_signing_key(ctx.keys.signing), key_id=KEY_ID)
    archive = directory.with_suffix(".tar.gz")
    archive.write_bytes(signed.archive)
    return archive


def _load(ctx: Context, home: Path, args: list[str]) -> Loaded:
    opa = OpaServer(ctx.opa.binary, home, args=args)
    start = time.perf_counter()
    opa.start()
    try:
        _wait_active(opa, start)
        wall = time.perf_counter() - start
        cpu = cpu_seconds(opa.pid)
        rss, peak = _memory_mib(opa.pid)
    finally:
        opa.stop()
    return Loaded(cpu, wall, rss, peak)


def _wait_active(opa: OpaServer, start: float) -> None:
    while time.perf_counter() - start < READY_TIMEOUT_S:
        try:
            if httpx.get(f"{opa.url}/health?bundles", timeout=5).status_code == httpx.codes.OK:
                return
        except httpx.TransportError:
            pass
        if not opa.alive():
            raise RuntimeError(f"OPA exited before its bundles were active: see {opa.workdir}")
        time.sleep(POLL_S)
    raise RuntimeError(f"OPA's bundles not active after {READY_TIMEOUT_S:.0f} s")


def _memory_mib(pid: int | None) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB, from /proc/<pid>/status."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]
