"""The demo's trace: one gateway request followed through Envoy and OPA in a real Jaeger.

Only when Jaeger is already built (`nexus_dataplane.jaeger.linked_jaeger`; the test
command builds it, ``NEXUS_BOOTSTRAP_JAEGER=1 make demo`` too): the demo never spends the
build on it. With it, the control plane, Envoy and OPA trace every request to a Jaeger on
loopback, one chat request goes out inside a span of the demo's own (its instrumented
httpx sends the W3C ``traceparent``), and the end of the run reads that trace back through
Jaeger's query API: Envoy's spans, our ``nexus.extauthz.Check`` span carrying the decision
id Envoy returned (the audit leaf's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from nexus_dataplane.jaeger import Jaeger, linked_jaeger

__all__ = ["CHECK_SPAN", "show_trace", "start_jaeger"]

CHECK_SPAN = "nexus.extauthz.Check"
TRACE_WAIT_S = 20.0


def start_jaeger(workdir: Path) -> Jaeger | None:
    """A Jaeger on loopback if one is built here, else None."""
    binary = linked_jaeger()
    if binary is None:
        return None
    jaeger = Jaeger(workdir, binary)
    jaeger.start_and_wait()
    return jaeger


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _whole(jaeger: Jaeger, trace_id: str) -> dict[str, Any] | None:
    """The trace once it holds Envoy's spans and the Check span, else None."""
    try:
        trace = jaeger.trace(trace_id)
    except KeyError:
        return None
    services = {trace["processes"][s["processID"]]["serviceName"] for s in trace["spans"]}
    checks = [s for s in trace["spans"] if s["operationName"] == CHECK_SPAN]
    envoy = any(name.startswith("nexus-envoy-") for name in services)
    return trace if checks and envoy else None


def show_trace(jaeger: Jaeger, trace_id: str, decision_id: str, out: Console) -> bool:
    """Print the traced request's spans and its URL; whether its Check span names
    ``decision_id``."""
    deadline = time.monotonic() + TRACE_WAIT_S
    trace = _whole(jaeger, trace_id)
    while trace is None and time.monotonic() < deadline:
        time.sleep(0.5)
        trace = _whole(jaeger, trace_id)
    url = f"{jaeger.query_url}/api/traces/{trace_id}"
    if trace is None:
        out.print(f"  [bold red]trace {trace_id} not in Jaeger after {TRACE_WAIT_S:.0f} s[/]")
        return False
    spans = sorted(trace["spans"], key=lambda s: s["startTime"])
    for span in spans:
        service = trace["processes"][span["processID"]]["serviceName"]
        out.print(f"    {service:<28} {span['operationName']:<48} {span['duration']:>7} µs")
    (check,) = [s for s in spans if s["operationName"] == CHECK_SPAN]
    tags = _tags(check)
    same = tags.get("nexus.decision_id") == decision_id
    out.print(
        f"  the Check span's decision id {tags.get('nexus.decision_id', '?')[:8]} "
        f"{'is' if same else '[bold red]is NOT[/]'} the one Envoy returned (the audit "
        f"leaf's); outcome {tags.get('nexus.outcome')}"
        + (
            f", rules {tags['nexus.rules']}"
            if tags.get("nexus.rules") not in (None, "", "[]")
            else ""
        )
        + "\n"
        f"  trace (Jaeger's query API, served during the run): {url}"
    )
    return same
