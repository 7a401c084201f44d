"""Constant-rate, open-loop HTTP load, without coordinated omission.

Why not the Debian tools: ``wrk`` is closed-loop (a connection sends its
next request only after the previous answer, so a slow answer delays the
requests behind it and never shows in the percentiles: coordinated
omission), and ``h2load --rps`` paces each client with a timer of at least
10 ms (``max(0.01, 1/rps)`` in its source), so at 1k rps it sends bursts of
ten requests every 10 ms and measures each from its burst, not from when it
was due. Neither can measure sub-millisecond added latency at a fixed rate.

So the benchmark builds a small Go program (``tests/bench/openloop``,
standard library only; Go is already needed to build OPA) that fires every
request on its own goroutine at ``start + k / rate`` over a keep-alive
HTTP/1.1 pool that opens another connection rather than wait for a busy one.
Sending never waits on the system under test, so the **service** latency
(request sent to answer read) is free of coordinated omission; it is the
figure the targets use. The **corrected** latency, from the moment each
request was due, adds the generator's own lateness (timer granularity,
CPU contention on this 2-CPU machine); it is shown beside it, and a rate
counts as sustained only when its corrected p99 stays bounded and no
request of the window was lost.

The generators run on the same two CPUs as what they measure; that is part
of every figure.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.common import LOOPBACK

SOURCE = Path(__file__).resolve().with_name("openloop")
CACHE = Path.home() / ".cache" / "nexus-policy" / "bench"
SUSTAINED_MAX_LOSS = 0.001
"""At most 0.1 % of the window's requests may fail or be refused."""
SUSTAINED_MAX_P99_MS = 50.0
"""A rate whose corrected p99 exceeds this is queueing, not being served."""
BUILD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    @staticmethod
    def of(values: list[float]) -> Percentiles:
        if not values:
            nan = math.nan
            return Percentiles(nan, nan, nan, nan, nan)
        ordered = sorted(values)

        def at(q: float) -> float:
            rank = max(1, math.ceil(q / 100 * len(ordered)))
            return ordered[min(rank, len(ordered)) - 1]

        return Percentiles(at(50), at(90), at(99), at(99.9), ordered[-1])

    def text(self) -> str:
        return f"{self.p50:.3f} / {self.p90:.3f} / {self.p99:.3f} / {self.max:.2f} ms"


@dataclass(frozen=True)
class LoadResult:
    target_rps: float
    window_s: float
    expected: int
    ok: int
    failed: int
    statuses: dict[int, int]
    service_ms: Percentiles
    corrected_ms: Percentiles
    lag_ms: Percentiles
    notes: list[str] = field(default_factory=list)

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.window_s if self.window_s else 0.0

    @property
    def lost(self) -> int:
        """Requests of the window that got no 2xx: transport errors, timeouts, refusals."""
        return self.expected - min(self.ok, self.expected)

    @property
    def sustained(self) -> bool:
        return (
            self.expected > 0
            and self.lost <= SUSTAINED_MAX_LOSS * self.expected
            and self.corrected_ms.p99 <= SUSTAINED_MAX_P99_MS
        )

    def describe(self) -> str:
        parts = [f"{self.achieved_rps:,.0f}/{self.target_rps:,.0f} rps"]
        if self.lost:
            statuses = dict(sorted(self.statuses.items()))
            parts.append(f"{self.lost} lost ({self.failed} errors, statuses {statuses})")
        parts.append(f"generator lag p99 {self.lag_ms.p99:.2f} ms")
        return "; ".join(parts)


def openloop_binary() -> Path:
    """The Go generator, built once per source version into the cache."""
    sources = [*sorted(SOURCE.glob("*.go")), SOURCE / "go.mod"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = CACHE / f"openloop-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("the latency benchmark needs Go (as scripts/bootstrap does for OPA)")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    out = subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), "."],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot build the load generator: {out.stderr or out.stdout}")
    partial.replace(binary)
    return binary


def constant_rate(
    url: str,
    clients: list[dict[str, str]],
    *,
    rate: float,
    window_s: float,
    warmup_s: float,
    workdir: Path,
    body: bytes | None = None,
) -> LoadResult:
    """Send ``rate`` requests/s in total, one generator process per header set."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"benchmarks only send traffic to {LOOPBACK}: {url}")
    binary = openloop_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    per_client = rate / len(clients)
    total_s = warmup_s + window_s
    body_path = workdir / "body.json"
    body_path.write_bytes(body or b"")
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i, headers in enumerate(clients):
            log = workdir / f"requests-{i}.tsv"
            log.unlink(missing_ok=True)
            argv = [
                str(binary),
                f"-url={url}",
                f"-rate={per_client:.3f}",
                f"-duration={total_s}s",
                f"-out={log}",
                "-method=POST" if body is not None else "-method=GET",
            ]
            if body is not None:
                argv.append(f"-body={body_path}")
            for name, value in headers.items():
                argv.append(f"-header={name}: {value}")
            with (workdir / f"generator-{i}.out").open("wb") as out:
                procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + total_s + 60
        for proc, _ in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return analyse([log for _, log in procs], rate, warmup_s, window_s)


def analyse(logs: list[Path], rate: float, warmup_s: float, window_s: float) -> LoadResult:
    """Percentiles of the requests due in [warmup, warmup + window) of every log."""
    lo, hi = warmup_s * 1e6, (warmup_s + window_s) * 1e6
    service: list[float] = []
    corrected: list[float] = []
    lag: list[float] = []
    statuses: dict[int, int] = {}
    expected = ok = failed = 0
    notes: list[str] = []
    for path in logs:
        if not path.exists():
            notes.append(f"{path.name} was not written")
            expected += round(rate / len(logs) * window_s)
            continue
        for line in path.read_text().splitlines():
            due, sent, ended, status = (int(x) for x in line.split("\t"))
            if not lo <= due < hi:
                continue
            expected += 1
            if status < 0:
                failed += 1
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                ok += 1
                service.append((ended - sent) / 1000)
                corrected.append((ended - due) / 1000)
                lag.append((sent - due) / 1000)
    return LoadResult(
        target_rps=rate,
        window_s=window_s,
        expected=expected,
        ok=ok,
        failed=failed,
        statuses=statuses,
        service_ms=Percentiles.of(service),
        corrected_ms=Percentiles.of(corrected),
        lag_ms=Percentiles.of(lag),
        notes=notes,
    )
