"""Runs the benchmarks: ``python -m tests.bench [--only NAME]... [--quick] [--json FILE]``.

Each benchmark prints its own table; the run ends with a summary of every
figure that has a target. The exit status is 0 when every benchmark ran
(misses included: a miss is a finding, not a crash), 1 when one failed.
Every process a benchmark starts listens on 127.0.0.1 and is stopped when it
ends; the working directory is removed unless ``--keep``.

``tests/bench/bench_audit.py`` belongs to the audit service's engineer: when
it exists, it runs last (``--skip audit`` leaves it out). If it defines
``run(ctx)`` (this runner's protocol) it is run like the others; otherwise
its ``main`` is called, with ``["--quick"]`` (or ``[]``) as its argument list
when it takes one, and with ``sys.argv`` and ``NEXUS_BENCH_QUICK=1`` set the
same way either way. Its figures stay in its own table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from rich.console import Console

from nexus_control.access.signing_keys import init_keys
from nexus_control.authoring.opa import Opa
from nexus_runtime.toolchain import find_opa
from tests.bench.common import Context, Figure, machine, summary

BENCHMARKS = (
    "build",
    "decision",
    "latency",
    "propagation",
    "activation",
    "budget",
    "overshoot",
    "rollout",
    "audit_ratio",
    "audit_chaos",
    "durable",
    "shadow",
    "uploads",
    "approval_replay",
    "ratelimit",
    "tracing",
    "scrape",
    "replicas",
    "console",
    "anomaly",
    "failover",
)
AUDIT = "audit"
ALL = (*BENCHMARKS, AUDIT)
AUDIT_FILE = Path(__file__).with_name("bench_audit.py")
WIDE = 150
"""Table width when the output is not a terminal (a log file, CI)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="NexusAI policy control plane benchmarks (see tests/bench/*.py).",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ALL,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(ALL)}",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=ALL,
        default=[],
        metavar="NAME",
        help="leave this benchmark out (repeatable), e.g. --skip audit",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs: a smoke test"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--workdir", type=Path, help="where bundles, logs and databases go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="control plane on a throwaway PostgreSQL instead of SQLite (the embedded default)",
    )
    parser.add_argument(
        "--upstream",
        choices=("fast", "stock", "direct"),
        default="fast",
        help="latency: behind Envoy, the benchmark's asyncio responder (fast, default), "
        "the data plane's stand-in (stock), or Envoy's direct_response (direct)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="latency: instead of the rate ladder, record OPA's CPU and allocation profiles "
        "(--pprof) of each OPA side at 500 rps into DIR (see tests/bench/profile.py)",
    )
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    names = list(args.only) if args.only else list(ALL)
    return [n for n in ALL if n in names and n not in args.skip]


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    try:
        yield path
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_audit(module: ModuleType, ctx: Context) -> list[Figure]:
    """``run(ctx)`` when the module follows this runner's protocol, else its ``main``."""
    runner = getattr(module, "run", None)
    if callable(runner) and list(inspect.signature(runner).parameters) == ["ctx"]:
        return _figures(runner(ctx))
    main = getattr(module, "main", None)
    if not callable(main):
        raise RuntimeError("bench_audit.py has neither run(ctx) nor main()")
    argv = ["--quick"] if ctx.quick else []
    saved_argv = sys.argv
    saved_env = os.environ.get("NEXUS_BENCH_QUICK")
    sys.argv = [str(Path(module.__file__ or "bench_audit.py")), *argv]
    if ctx.quick:
        os.environ["NEXUS_BENCH_QUICK"] = "1"
    try:
        result = main(argv) if inspect.signature(main).parameters else main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"bench_audit.main() exited with {exc.code}") from None
        result = None
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("NEXUS_BENCH_QUICK", None)
        else:
            os.environ["NEXUS_BENCH_QUICK"] = saved_env
    return _figures(result)


def _figures(result: Any) -> list[Figure]:
    if isinstance(result, list) and all(isinstance(f, Figure) for f in result):
        return result
    return []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else WIDE)
    names = selected(args)
    started = datetime.now(UTC)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    elsewhere: list[str] = []
    if AUDIT in names and not AUDIT_FILE.exists():
        names.remove(AUDIT)
        console.print("[dim]tests/bench/bench_audit.py does not exist yet: audit skipped[/dim]")

    console.print(
        f"[bold]NexusAI benchmarks[/bold] {'(quick) ' if args.quick else ''}"
        f"{', '.join(names)}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(figures are noisy when other work shares the machine)"
    )
    with workdir(args) as work:
        ctx = Context(
            workdir=work,
            opa=Opa(find_opa()),
            keys=init_keys(work / "keys"),
            console=console,
            quick=args.quick,
            postgres=args.postgres,
            upstream=args.upstream,
            profile_dir=args.profile,
        )
        for name in names:
            console.rule(f"[bold]{name}")
            start = time.monotonic()
            try:
                if name == AUDIT:
                    produced = run_audit(importlib.import_module("tests.bench.bench_audit"), ctx)
                else:
                    runner: Callable[[Context], list[Figure]] = importlib.import_module(
                        f"tests.bench.bench_{name}"
                    ).run
                    produced = runner(ctx)
                figures += produced
                if not produced:
                    elsewhere.append(name)
            except KeyboardInterrupt:
                errors[name] = "interrupted"
                break
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                console.print(f"[bold red]{name} failed[/bold red]")
                console.print(traceback.format_exc())
            durations[name] = time.monotonic() - start
            console.print(f"[dim]{name}: {durations[name]:.0f} s[/dim]")

    console.rule("[bold]summary")
    summary(console, figures, errors, elsewhere)
    if args.json is not None:
        document = {
            "started": started.isoformat(),
            "quick": args.quick,
            "benchmarks": names,
            "machine": machine(),
            "durations_s": {k: round(v, 1) for k, v in durations.items()},
            "figures": [f.as_dict() for f in figures],
            "errors": errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        console.print(f"figures written to {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
