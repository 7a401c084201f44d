"""CLI commands that put a revision in shadow for a region, list shadows and end one."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from nexus_cli.console import JsonFlag, TokenOption, UrlOption, out
from nexus_cli.replay import print_gates, print_report
from nexus_cli.rollout import ReasonOption
from nexus_cli.service import client
from nexus_control.settings import ControlSettings

__all__ = ["shadow_app", "shadow_end", "shadow_list", "shadow_report", "shadow_set"]

shadow_app = typer.Typer(
    help="Shadow evaluation: a signed revision judged on a region's live traffic, never in force.",
    no_args_is_help=True,
)

Region = Annotated[str, typer.Argument(help="Region id (see `nexus-policy fleet`)")]


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "-"


def _line(shadow: dict[str, Any]) -> str:
    return (
        f"{shadow['region']}: {_short(shadow['revision'])} in shadow beside "
        f"{_short(shadow['active_revision'])} since {shadow['since']}"
    )


@shadow_app.command("set")
def shadow_set(
    region: Region,
    revision: Annotated[str, typer.Argument(help="A published, signed revision (64 hex)")],
    reason: ReasonOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Put a revision in shadow for a region (operator; audited)."""
    with client(ControlSettings(), url, token) as api:
        result = api.post("/v1/shadow", {"region": region, "revision": revision, "reason": reason})
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(_line(result))


@shadow_app.command("end")
def shadow_end(
    region: Region, reason: ReasonOption = None, url: UrlOption = None, token: TokenOption = None
) -> None:
    """End a region's shadow evaluation (operator; audited)."""
    with client(ControlSettings(), url, token) as api:
        api.post(f"/v1/shadow/{region}/end", {"reason": reason})
    out.print(f"{region}: no shadow")


@shadow_app.command("list")
def shadow_list(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False
) -> None:
    """Every region's shadow candidate and the revision it is compared with."""
    with client(ControlSettings(), url, token) as api:
        result = api.get("/v1/shadow")
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("region", "candidate", "in force", "since")
    for shadow in result["shadows"]:
        table.add_row(
            shadow["region"],
            _short(shadow["revision"]),
            _short(shadow["active_revision"]),
            shadow["since"],
        )
    out.print(table)


@shadow_app.command("report")
def shadow_report(
    region: Region, url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False
) -> None:
    """A region's shadow outcomes for its candidate, in the replay report's buckets, and the
    shadow gates' verdict; ``--json`` prints the report exactly (canonical JSON)."""
    with client(ControlSettings(), url, token) as api:
        result = api.get(f"/v1/shadow/{region}/report")
    if as_json:
        typer.echo(result["report"])
        return
    out.print(
        f"{region}: {_short(result['candidate'])} in shadow beside "
        f"{_short(result['active_revision'])} since {result['since']}"
    )
    print_report(json.loads(result["report"]))
    print_gates(result["gates"])
    if result["gates_passed"] is not None:
        verdict = "passes" if result["gates_passed"] else "[bold red]fails[/bold red]"
        out.print(f"the shadow gate {verdict} (report {result['digest']})")
