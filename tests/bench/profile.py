"""Go profiles of an OPA under load: ``python -m tests.bench --only latency --profile DIR``.

The OPA sides of the latency benchmark start with ``--pprof``; each is then
driven at ``PROFILE_RATE`` allowed chat requests per second through Envoy
and our ext_authz plugin while OPA's own ``/debug/pprof`` endpoints record a
CPU profile and an allocation profile over the same window (``?seconds=``:
the delta over that window, not everything since start). Each profile is
kept as ``<side>.cpu.pb.gz`` / ``<side>.allocs.pb.gz`` and summarised into
``<side>.txt`` (``go tool pprof -top``, flat and cumulative), which is what
issue 11's breakdown (gRPC, input, evaluation, result, decision log, GC)
is read from.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

__all__ = ["PROFILE_RATE", "PROFILE_SECONDS", "profile_under_load"]

PROFILE_RATE = 500
PROFILE_SECONDS = 10
"""The profile window; the load runs a second longer on each side of it."""
TOP_NODES = 40
PPROF_TIMEOUT_S = 60.0


def profile_under_load(
    opa_url: str, side: str, directory: Path, load: Callable[[float], object]
) -> Path:
    """Run ``load(seconds)`` while OPA at ``opa_url`` records CPU and allocation profiles."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = side.replace(" ", "_").replace("+", "")
    profiles: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def fetch(kind: str) -> None:
        try:
            answer = httpx.get(
                f"{opa_url}/debug/pprof/{kind}",
                params={"seconds": PROFILE_SECONDS},
                timeout=PPROF_TIMEOUT_S,
            )
            answer.raise_for_status()
            profiles[kind] = answer.content
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(kind,)) for kind in ("profile", "allocs")]
    for thread in threads:
        thread.start()
    load(PROFILE_SECONDS + 2.0)
    for thread in threads:
        thread.join(PPROF_TIMEOUT_S)
    if errors:
        raise RuntimeError(f"pprof of {side} at {opa_url} failed: {errors[0]}") from errors[0]
    cpu = directory / f"{stem}.cpu.pb.gz"
    allocs = directory / f"{stem}.allocs.pb.gz"
    cpu.write_bytes(profiles["profile"])
    allocs.write_bytes(profiles["allocs"])
    summary = directory / f"{stem}.txt"
    summary.write_text(
        "\n\n".join(
            [
                _top(cpu, "-top"),
                _top(cpu, "-top", "-cum"),
                _top(allocs, "-top", "-sample_index=alloc_objects"),
                _top(allocs, "-top", "-cum", "-sample_index=alloc_objects"),
            ]
        )
    )
    return summary


def _top(profile: Path, *flags: str) -> str:
    go = shutil.which("go")
    if go is None:
        return f"(go not on PATH: read {profile.name} with `go tool pprof {' '.join(flags)}`)"
    argv = [go, "tool", "pprof", *flags, f"-nodecount={TOP_NODES}", str(profile)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return f"$ go tool pprof {' '.join(flags)} {profile.name}\n{out.stdout}{out.stderr}"
