"""CLI commands that drive rollouts through the control plane's API."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from nexus_cli.console import JsonFlag, TokenOption, UrlOption, err, out
from nexus_cli.service import client
from nexus_control.rollout.states import TERMINAL_STATES, EnforcerState, RolloutState
from nexus_control.settings import ControlSettings

__all__ = [
    "ReasonOption",
    "RolloutId",
    "approve",
    "override",
    "pause",
    "promote",
    "resume",
    "rollback",
    "rollout_app",
    "rollout_list",
    "rollout_show",
    "rollout_status",
    "rollout_watch",
    "status_view",
]

rollout_app = typer.Typer(
    help="Rollouts: status, history, and watching one move.", no_args_is_help=True
)

RolloutId = Annotated[int, typer.Argument(help="Rollout id (see `nexus-policy rollout list`)")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (kept in the history)")]
_STATE_STYLE: dict[str, str] = {
    EnforcerState.ACTIVE: "green",
    EnforcerState.PENDING: "yellow",
    EnforcerState.FAILED: "bold red",
    EnforcerState.DOWN: "red",
    RolloutState.COMPLETED: "green",
    RolloutState.ROLLING: "cyan",
    RolloutState.PAUSED: "yellow",
    RolloutState.HALTED: "bold red",
    RolloutState.ROLLED_BACK: "magenta",
    RolloutState.PENDING_APPROVAL: "yellow",
    RolloutState.HELD: "bold yellow",
    RolloutState.SUPERSEDED: "dim",
}


def _styled(state: str) -> str:
    style = _STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/{style}]" if style else state


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "-"


def _call(url: str | None, token: str | None, method: str, path: str, body: Any = None) -> Any:
    with client(ControlSettings(), url, token) as api:
        return api.get(path) if method == "GET" else api.post(path, body or {})


def _action(
    verb: str,
    rollout_id: int,
    body: dict[str, Any],
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    result = _call(url, token, "POST", f"/v1/rollouts/{rollout_id}/{verb}", body)
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"rollout {result['id']} ({_short(result['revision'])}): {_styled(result['state'])}"
            f", wave {result['wave']}"
            + (f" — {escape(result['reason'])}" if result.get("reason") else "")
        )


def approve(
    rollout_id: RolloutId,
    comment: Annotated[str | None, typer.Option(help="Kept with the approval")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a publication that waits for a second person."""
    _action("approve", rollout_id, {"comment": comment}, url, token, as_json)


def override(
    rollout_id: RolloutId,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the failing gate is accepted (kept as evidence)")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Release a rollout its failing replay gate holds (an approver, never the author)."""
    _action("override", rollout_id, {"reason": reason}, url, token, as_json)


def promote(
    rollout_id: RolloutId,
    force: Annotated[bool, typer.Option(help="Promote even if the wave has not converged")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Move a rollout to its next wave now, skipping the soak."""
    _action("promote", rollout_id, {"force": force}, url, token, as_json)


def pause(
    rollout_id: RolloutId,
    reason: ReasonOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Hold a rollout where it is."""
    _action("pause", rollout_id, {"reason": reason}, url, token, as_json)


def resume(
    rollout_id: RolloutId,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Let a paused rollout continue."""
    _action("resume", rollout_id, {}, url, token, as_json)


def rollback(
    rollout_id: RolloutId,
    reason: ReasonOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Put every region a rollout reached back on its last good revision."""
    _action("rollback", rollout_id, {"reason": reason}, url, token, as_json)


def status_view(status: dict[str, Any]) -> Group:
    current = status.get("rollout")
    header = "no rollout yet"
    if current:
        header = (
            f"rollout {current['id']}: revision {_short(current['revision'])} "
            f"{_styled(current['state'])}, wave {current['wave']}"
            + (f" — {current['reason']}" if current.get("reason") else "")
        )
    table = Table(show_lines=False)
    for column in ("wave", "region", "desired", "last good", "convergence", "enforcers"):
        table.add_column(column)
    for region in status["regions"]:
        enforcers = (
            ", ".join(f"{e['id']} {_styled(e['state'])}" for e in region["enforcers"])
            or "[red]none known[/red]"
        )
        bar = ProgressBar(total=1.0, completed=region["convergence"], width=12)
        row_table = Table.grid(padding=(0, 1))
        row_table.add_row(bar, f"{region['convergence']:.0%}")
        table.add_row(
            str(region["wave"]),
            region["region"],
            _short(region["desired"]),
            _short(region["last_good"]),
            row_table,
            enforcers,
        )
    return Group(header, table)


@rollout_app.command("status")
def rollout_status(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False
) -> None:
    """The current rollout and, per region and enforcer, what runs where."""
    status = _call(url, token, "GET", "/v1/rollouts/status")
    if as_json:
        out.print_json(json.dumps(status))
    else:
        out.print(status_view(status))


@rollout_app.command("list")
def rollout_list(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False
) -> None:
    """Recent rollouts, newest first."""
    result = _call(url, token, "GET", "/v1/rollouts")
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title="Rollouts")
    for column in ("id", "revision", "state", "wave", "by", "created", "reason"):
        table.add_column(column)
    for r in result["rollouts"]:
        table.add_row(
            str(r["id"]),
            _short(r["revision"]),
            _styled(r["state"]),
            str(r["wave"]),
            r["created_by"],
            r["created_at"][:19],
            r["reason"] or "",
        )
    out.print(table)


@rollout_app.command("show")
def rollout_show(
    rollout_id: RolloutId,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """One rollout's history (who, when, why) and its semantic diff."""
    result = _call(url, token, "GET", f"/v1/rollouts/{rollout_id}")
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"rollout {result['id']}: {_short(result['revision'])} {_styled(result['state'])}"
        f" (by {result['created_by']}; approval needed: {result['needs_approval']})"
    )
    history = Table(title="History")
    for column in ("at", "actor", "action", "region", "detail"):
        history.add_column(column)
    for e in result["history"]:
        history.add_row(e["at"][:19], e["actor"], e["action"], e["region"] or "", e["detail"] or "")
    out.print(history)
    widening = [c for c in result["diff"].get("changes", []) if c["effect"] == "widens"]
    out.print(
        f"{len(result['diff'].get('changes', []))} change(s), {len(widening)} widening access"
    )


@rollout_app.command("watch")
def rollout_watch(
    timeout: Annotated[float, typer.Option(help="Stop watching after this many seconds")] = 600,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Follow the current rollout live until it completes, halts or is rolled back."""
    deadline = time.monotonic() + timeout
    status = _call(url, token, "GET", "/v1/rollouts/status")
    with Live(status_view(status), console=out, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            current = status.get("rollout")
            if current is None or current["state"] in TERMINAL_STATES:
                break
            time.sleep(0.5)
            status = _call(url, token, "GET", "/v1/rollouts/status")
            live.update(status_view(status))
    final = status.get("rollout")
    if final and final["state"] in (RolloutState.HALTED, RolloutState.ROLLED_BACK):
        err.print(f"rollout {final['id']} {final['state']}: {final.get('reason') or ''}")
        raise typer.Exit(1)
