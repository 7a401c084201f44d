"""What every benchmark shares: result records, targets, tables, timing, and the run context.

A benchmark is a module ``tests/bench/bench_<name>.py`` with a function
``run(ctx: Context) -> list[Figure]``. It prints its own table (``report``)
and returns its figures; the runner prints one summary table of all of them
and can write them as JSON. Figures with a target carry PASS or MISS;
the others are information (``-``).

Every loop in a benchmark is bounded twice, by a count and by a
:class:`Deadline`, so a run always stops by itself.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.bundle import BuildOptions, BuiltBundle, build_bundle
from nexus_control.authoring.opa import Opa
from tests.bench.generate import GeneratedBundle, generate
from tests.fixtures.environment import KEY_ID, remember_sources

LOOPBACK = "127.0.0.1"

Comparison = Literal["<", "<=", ">", ">="]


@dataclass(frozen=True)
class Figure:
    """One measured number, with its target when it has one."""

    bench: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "-"
        return "PASS" if self.ok else "MISS"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        if self.value is not None and not math.isfinite(self.value):
            out["value"] = None
        return out


def figure(
    bench: str,
    name: str,
    value: float | None,
    unit: str,
    *,
    target: tuple[Comparison, float] | None = None,
    note: str = "",
) -> Figure:
    """A figure; with ``target=("<", 10.0)`` it is PASS when ``value < 10``."""
    if target is None:
        return Figure(bench, name, value, unit, note=note)
    op, bound = target
    text = f"{op} {format_value(bound, unit)}"
    if value is None or not math.isfinite(value):
        return Figure(bench, name, value, unit, text, False, note)
    ok = {
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
    }[op]
    return Figure(bench, name, value, unit, text, ok, note)


def judged(
    bench: str, name: str, value: float | None, unit: str, target: str, ok: bool, note: str = ""
) -> Figure:
    """A figure whose target is not a plain comparison (its text and verdict given)."""
    return Figure(bench, name, value, unit, target, ok, note)


def format_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if unit in {"rps", "req", "count", "tenants", "bytes"}:
        return f"{value:,.0f} {unit}" if unit != "count" else f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit in {"ms", "us", "s", "s/1k tenants"}:
        digits = 3 if abs(value) < 10 else (1 if abs(value) < 1000 else 0)
        return f"{value:,.{digits}f} {unit}"
    return f"{value:g} {unit}".strip()


def report(console: Console, title: str, figures: Sequence[Figure]) -> None:
    """Print one benchmark's table: each figure with its target and verdict."""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_column("how / note", overflow="fold", max_width=70)
    for f in figures:
        table.add_row(f.name, format_value(f.value, f.unit), f.target, _styled(f), f.note)
    console.print(table)


def _styled(f: Figure) -> str:
    if f.ok is None:
        return "-"
    return "[green]PASS[/green]" if f.ok else "[bold red]MISS[/bold red]"


def summary(
    console: Console,
    figures: Sequence[Figure],
    errors: dict[str, str],
    elsewhere: Sequence[str] = (),
) -> None:
    """The runner's last table: every figure that has a target, plus failures.

    ``elsewhere`` names benchmarks that ran but print their own figures only.
    """
    table = Table(title="Summary", title_justify="left")
    table.add_column("benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for f in figures:
        if f.ok is not None:
            table.add_row(f.bench, f.name, format_value(f.value, f.unit), f.target, _styled(f))
    for bench in elsewhere:
        table.add_row(bench, "ran; its figures are in its own table above", "", "", "")
    for bench, message in errors.items():
        table.add_row(bench, f"[bold red]FAILED[/bold red]: {message[:120]}", "", "", "")
    console.print(table)


# -- statistics and timing ------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


class Deadline:
    """A time budget: ``left()`` seconds remain; ``expired`` once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    @property
    def expired(self) -> bool:
        return self.left() <= 0


@dataclass
class Stopwatch:
    elapsed: float = 0.0


@contextmanager
def timed() -> Iterator[Stopwatch]:
    """``with timed() as t: ...`` then ``t.elapsed`` in seconds (perf_counter)."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.elapsed = time.perf_counter() - start


def wait_until(
    check: Callable[[], bool], timeout_s: float, interval_s: float = 0.02
) -> float | None:
    """Seconds until ``check()`` is true (polled every ``interval_s``), or None on timeout."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            return None
        time.sleep(interval_s)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have been waited for (finished ones)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def own_cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the control plane runs here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def machine() -> dict[str, Any]:
    """Where the figures were taken (they mean little without it)."""
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


# -- the run's context ------------------------------------------------------------


@dataclass
class Context:
    """What the runner hands every benchmark: options, tools, keys and shared bundles.

    Generated and built bundles are cached for the run, so the 10k-tenant
    bundle that ``build`` measures is the one ``latency`` and ``budget`` use.
    """

    workdir: Path
    opa: Opa
    keys: KeyPaths
    console: Console
    quick: bool = False
    postgres: bool = False
    upstream: str = "fast"
    profile_dir: Path | None = None
    """With ``--profile``: where the latency benchmark writes OPA's Go profiles."""
    _generated: dict[tuple[int, int], GeneratedBundle] = field(default_factory=dict)
    _built: dict[tuple[int, int], BuiltBundle] = field(default_factory=dict)

    @property
    def main_tenants(self) -> int:
        """The size the enforcement benchmarks run with (the issue's "10k-tenant bundle")."""
        return 1_000 if self.quick else 10_000

    def generated(self, tenants: int, variant: int = 0) -> GeneratedBundle:
        key = (tenants, variant)
        if key not in self._generated:
            self._generated[key] = generate(
                self.workdir / "sources" / f"tenants-{tenants}-v{variant}", tenants, variant=variant
            )
        return self._generated[key]

    def build_options(self) -> BuildOptions:
        return BuildOptions(
            signing_key=self.keys.signing,
            key_id=KEY_ID,
            approval_jwks=self.keys.approval_jwks,
            dist_dir=self.workdir / "dist",
        )

    def built(self, tenants: int, variant: int = 0) -> BuiltBundle:
        key = (tenants, variant)
        if key not in self._built:
            source = self.generated(tenants, variant)
            self._built[key] = build_bundle(source.path, self.opa, self.build_options())
            remember_sources(self._built[key], source.path)
        return self._built[key]

    def remember_built(self, tenants: int, variant: int, built: BuiltBundle) -> None:
        self._built[(tenants, variant)] = built
