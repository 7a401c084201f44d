"""``nexus-policy replay``: a signed candidate replayed over recorded decisions, by the service.

The control plane (with its audit log) does the work: it verifies the
candidate's signature, evaluates both sides with the real OPA, signs the
report and appends it to the audit log. ``--json`` prints the report exactly
as signed (canonical JSON: the same window gives the same bytes).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from nexus_cli.client import ControlPlaneClient
from nexus_cli.console import JsonFlag, TokenOption, UrlOption, err, out
from nexus_cli.errors import EXIT_ENVIRONMENT
from nexus_contract.errors import NexusError
from nexus_control.authoring.archive import write_archive
from nexus_control.settings import ControlSettings

__all__ = ["REPLAY_TIMEOUT_S", "print_gates", "print_report", "replay"]

REPLAY_TIMEOUT_S = 900.0
_HEX = frozenset("0123456789abcdef")


class ReplayGateFailedError(NexusError):
    """The candidate fails a gate the fleet file declares (exit code 1)."""


def _candidate_body(candidate: str) -> dict[str, str]:
    if len(candidate) == 64 and set(candidate) <= _HEX:
        return {"candidate_revision": candidate}
    path = Path(candidate)
    if path.is_dir():
        files = {
            item.relative_to(path).as_posix(): item.read_bytes()
            for item in sorted(path.rglob("*"))
            if item.is_file() and not item.is_symlink()
        }
        archive = write_archive(files)
    elif path.is_file():
        archive = path.read_bytes()
    else:
        raise typer.BadParameter(f"{candidate}: not a revision (64 hex), a file or a directory")
    return {"candidate_archive": base64.b64encode(archive).decode()}


def print_report(report: dict[str, Any]) -> None:
    """A replay report's counts, groups and samples as tables (a shadow report's too: same
    shape, titled by its kind)."""
    scope = report["scope"]
    out.print(
        f"candidate {scope['candidate'][:12]} vs {scope['baseline'][:12]} over "
        f"{scope['window']['since']} .. {scope['window']['until']}: {report['total']} decisions"
    )
    title = "shadow" if report.get("kind") == "shadow_report" else "replay"
    counts = Table("bucket", "decisions", "sample decision ids", title=title)
    samples = report["samples"]
    for bucket, count in report["counts"].items():
        ids = ", ".join(s["decision_id"][:13] for s in samples.get(bucket, [])[:3])
        counts.add_row(bucket, str(count), ids)
    out.print(counts)
    blocked = {k: v for k, v in report["not_replayable"].items() if v}
    if blocked:
        out.print("not replayable: " + ", ".join(f"{k} {v}" for k, v in sorted(blocked.items())))
    for name in ("tenant", "route", "rule", "control", "prompt_version"):
        table = Table(name, *report["counts"].keys(), title=f"by {name.replace('_', ' ')}")
        for key, row in report["by"][name].items():
            table.add_row(key, *(str(row.get(bucket, 0)) for bucket in report["counts"]))
        out.print(table)
    for move, count in report["prompt_version_moves"].items():
        out.print(f"prompt version moved {move}: {count} decisions")


def print_gates(gates: list[dict[str, Any]]) -> None:
    for gate in gates:
        mark = "[green]pass[/green]" if gate["passed"] else "[bold red]FAIL[/bold red]"
        note = f"; {escape(gate['note'])}" if gate.get("note") else ""
        out.print(f"gate {escape(gate['gate'])}: {mark} (observed {gate['observed']}, limit "
                  f"{gate['limit']}{note})")  # fmt: skip


def _table(result: dict[str, Any]) -> None:
    print_report(json.loads(result["report"]))
    timing = result["timing"]
    out.print(
        f"evaluation per decision: baseline p50 {timing['baseline']['p50_ns']} ns / p99 "
        f"{timing['baseline']['p99_ns']} ns; candidate p50 {timing['candidate']['p50_ns']} ns / "
        f"p99 {timing['candidate']['p99_ns']} ns; {timing['decisions_per_s']:.0f} decisions/s"
    )
    print_gates(result["gates"])
    out.print(f"signed report {result['digest']} appended to the audit log")


def replay(
    candidate: Annotated[
        str,
        typer.Argument(help="A revision (64 hex), a built .tar.gz or a built bundle dir"),
    ],
    baseline: Annotated[
        str | None, typer.Option(help="Baseline revision (default: each decision's own)")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Window start")] = None,
    until: Annotated[datetime | None, typer.Option(help="Window end (default: now)")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's decisions")] = None,
    route: Annotated[str | None, typer.Option(help="Only this route")] = None,
    tool: Annotated[str | None, typer.Option(help="Only calls of this tool")] = None,
    sample: Annotated[float | None, typer.Option(help="Replay this fraction (0..1]")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many decisions")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a signed candidate over recorded decisions; the report is signed and logged."""
    settings = ControlSettings()
    resolved = token or settings.admin_token
    if not resolved:
        err.print("error: no token: pass --token or set NEXUS_ADMIN_TOKEN")
        raise typer.Exit(EXIT_ENVIRONMENT)
    body: dict[str, Any] = {
        **_candidate_body(candidate),
        "baseline": baseline,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "tenant": tenant,
        "route": route,
        "tool": tool,
        "sample": sample,
        "limit": limit,
    }
    timeout = httpx.Timeout(REPLAY_TIMEOUT_S, connect=10.0)
    with ControlPlaneClient(url or settings.base_url, resolved, timeout=timeout) as api:
        result = api.post("/v1/replays", {k: v for k, v in body.items() if v is not None})
    if as_json:
        typer.echo(result["report"])
    else:
        _table(result)
    if result["gates_passed"] is False:
        failed = ", ".join(g["gate"] for g in result["gates"] if not g["passed"])
        raise ReplayGateFailedError(f"the candidate fails the replay gates: {failed}")
