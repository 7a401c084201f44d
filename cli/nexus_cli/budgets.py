"""CLI commands for spend anomalies on hold: list them, release one (approvers)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from nexus_cli.console import JsonFlag, TokenOption, UrlOption, out
from nexus_cli.service import client
from nexus_control.settings import ControlSettings

__all__ = ["budgets_app", "holds_list", "holds_release"]

budgets_app = typer.Typer(
    help="Budgets: tenants whose spend anomaly is held by their onAnomaly action.",
    no_args_is_help=True,
)


@budgets_app.command("holds")
def holds_list(url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False) -> None:
    """Tenants whose spend anomaly is held (operator, compliance)."""
    with client(ControlSettings(), url, token) as api:
        result = api.get("/v1/budgets/anomaly-holds")
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("tenant", "finding", "held since")
    for hold in result["holds"]:
        table.add_row(hold["tenant"], f"{hold['kind']} on {hold['day']}", hold["since"])
    out.print(table)


@budgets_app.command("release")
def holds_release(
    tenant: Annotated[str, typer.Argument(help="The tenant whose hold ends")],
    reason: Annotated[str, typer.Option("--reason", help="What you checked (audited)")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """End a tenant's spend-anomaly hold (approver; audited with the reason)."""
    with client(ControlSettings(), url, token) as api:
        released = api.post(f"/v1/budgets/anomaly-holds/{tenant}/release", {"reason": reason})
    out.print(f"{tenant}: hold of the {released['kind']} on {released['day']} released")
