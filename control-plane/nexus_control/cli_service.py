"""CLI commands that run or talk to the control plane service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nexus_control.bundle import BuildError, BuildOptions, build_bundle
from nexus_control.client import ApiCallError, ControlPlaneClient
from nexus_control.db import Database
from nexus_control.keys import SigningKeyError
from nexus_control.loader import SpecError
from nexus_control.opa import Opa
from nexus_control.settings import ControlSettings
from nexus_control.tokens import Role, TokenError, create_token, revoke_token
from nexus_control.toolchain import ToolMissingError, find_opa

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

tokens_app = typer.Typer(help="Bearer tokens (stored hashed; shown once).", no_args_is_help=True)

EXIT_PROBLEMS = 1
EXIT_ENVIRONMENT = 2

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token (default NEXUS_ADMIN_TOKEN)")
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Control plane URL (default NEXUS_URL)")
]


def client(settings: ControlSettings, url: str | None, token: str | None) -> ControlPlaneClient:
    resolved = token or settings.admin_token
    if not resolved:
        err.print("error: no token: pass --token or set NEXUS_ADMIN_TOKEN")
        raise typer.Exit(EXIT_ENVIRONMENT)
    return ControlPlaneClient(url or settings.base_url, resolved)


def fail(exc: ApiCallError) -> typer.Exit:
    err.print(f"error: {exc}")
    return typer.Exit(EXIT_ENVIRONMENT if exc.status in (0, 401, 403) else EXIT_PROBLEMS)


def serve() -> None:
    """Run the control plane API (bundle server, status intake, usage, admin)."""
    import uvicorn

    from nexus_audit.service import AuditError, AuditLog
    from nexus_audit.settings import AuditSettings, KeyFileError
    from nexus_control.api.app import create_app, create_control_plane
    from nexus_control.keys import audit_settings_in
    from nexus_control.logs import uvicorn_log_config

    settings = ControlSettings()
    try:
        plane = create_control_plane(settings)
        audit = (
            AuditLog.from_settings(audit_settings_in(settings.keys_dir, AuditSettings()))
            if settings.colocate_audit
            else None
        )
    except (ToolMissingError, SigningKeyError, KeyFileError, AuditError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    uvicorn.run(
        create_app(plane, audit),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(),
    )


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="What the token may do")],
    name: Annotated[str, typer.Option(help="Who holds it (the actor in audit events)")],
    region: Annotated[str | None, typer.Option(help="Enforcer tokens: their region")] = None,
    enforcer: Annotated[str | None, typer.Option(help="Bind to one enforcer id")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token in the control plane's database and print it once."""
    settings = ControlSettings()
    db = Database(settings.database_url)
    db.migrate()
    try:
        with db.session() as session:
            plain, principal = create_token(
                session, name=name, role=role, region=region, enforcer_id=enforcer
            )
    except TokenError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_PROBLEMS) from None
    if as_json:
        out.print_json(json.dumps({"id": principal.token_id, "token": plain, "role": role.value}))
    else:
        out.print(plain)
        err.print(f"token {principal.token_id} for {name} ({role.value}); it is not shown again")


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id")]) -> None:
    """Revoke a token by id."""
    db = Database(ControlSettings().database_url)
    with db.session() as session:
        if not revoke_token(session, token_id):
            err.print(f"error: no live token {token_id}")
            raise typer.Exit(EXIT_PROBLEMS)
    out.print(f"revoked {token_id}")


def publish(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory to build and publish")],
    overlay: Annotated[
        list[Path] | None, typer.Option("--overlay", help="Extra spec directory (repeatable)")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Build, test and sign a bundle, then publish it to the control plane."""
    settings = ControlSettings()
    try:
        opa = Opa(find_opa(settings))
        built = build_bundle(
            bundle_dir,
            opa,
            BuildOptions(
                signing_key=settings.signing_key_path,
                key_id=settings.signing_key_id,
                approval_key=settings.approval_key_path,
                dist_dir=settings.dist_dir,
            ),
            overlays=overlay or (),
        )
    except SpecError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    except BuildError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    except (SigningKeyError, ToolMissingError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    with client(settings, url, token) as api:
        try:
            result = api.publish(built.path.read_bytes())
        except ApiCallError as exc:
            raise fail(exc) from None
    if as_json:
        out.print_json(json.dumps(result))
    else:
        verb = "published" if result["created"] else "already published"
        out.print(f"[green]{verb}[/green] {result['bundle']} revision {result['revision']}")


def fleet_cmd(
    region: Annotated[str | None, typer.Option(help="Only this region")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Every enforcer with the revision it holds and has active, and its errors."""
    settings = ControlSettings()
    with client(settings, url, token) as api:
        try:
            result = api.fleet(region)
        except ApiCallError as exc:
            raise fail(exc) from None
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title="Fleet")
    for column in ("enforcer", "region", "bundle", "held", "active", "error", "last seen"):
        table.add_column(column)
    for enforcer in result["enforcers"]:
        for name, b in sorted(enforcer["bundles"].items()):
            table.add_row(
                enforcer["id"],
                enforcer["region"],
                name,
                (b["held_revision"] or "-")[:12],
                (b["active_revision"] or "-")[:12],
                b["error"] or "",
                enforcer["last_seen_at"][:19],
            )
    out.print(table)
