"""Running the control plane, and the commands that talk to it: tokens, publish, fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nexus_cli.client import ControlPlaneClient
from nexus_cli.console import JsonFlag, OverlayOption, TokenOption, UrlOption, err, out
from nexus_cli.errors import EXIT_ENVIRONMENT, EXIT_PROBLEMS
from nexus_control.access.tokens import Role, create_token, revoke_token
from nexus_control.authoring.bundle import BuildError, BuildOptions, build_bundle
from nexus_control.authoring.loader import SpecError
from nexus_control.authoring.opa import Opa
from nexus_control.settings import ControlSettings
from nexus_control.store.database import control_database
from nexus_runtime.toolchain import find_opa

__all__ = ["client", "fleet", "publish", "serve", "tokens_app"]

tokens_app = typer.Typer(help="Bearer tokens (stored hashed; shown once).", no_args_is_help=True)


def client(settings: ControlSettings, url: str | None, token: str | None) -> ControlPlaneClient:
    """A client of the control plane at ``url`` (or NEXUS_URL) with the caller's token."""
    resolved = token or settings.admin_token
    if not resolved:
        err.print("error: no token: pass --token or set NEXUS_ADMIN_TOKEN")
        raise typer.Exit(EXIT_ENVIRONMENT)
    return ControlPlaneClient(url or settings.base_url, resolved)


def serve() -> None:
    """Run the control plane API (bundle server, status intake, usage, admin)."""
    from nexus_audit.service import AuditLog
    from nexus_audit.settings import AuditSettings
    from nexus_control.access.signing_keys import audit_settings_in
    from nexus_control.api.app import create_app, create_control_plane
    from nexus_runtime.server import serve_forever

    settings = ControlSettings()
    plane = create_control_plane(settings)
    audit = (
        AuditLog.from_settings(audit_settings_in(settings.keys_dir, AuditSettings()))
        if settings.colocate_audit
        else None
    )
    serve_forever(create_app(plane, audit), settings.host, settings.port)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="What the token may do")],
    name: Annotated[str, typer.Option(help="Who holds it (the actor in audit events)")],
    region: Annotated[str | None, typer.Option(help="Enforcer tokens: their region")] = None,
    enforcer: Annotated[str | None, typer.Option(help="Bind to one enforcer id")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token in the control plane's database and print it once."""
    db = control_database(ControlSettings().database_url)
    db.migrate()
    with db.session() as session:
        plain, principal = create_token(
            session, name=name, role=role, region=region, enforcer_id=enforcer
        )
    if as_json:
        out.print_json(json.dumps({"id": principal.token_id, "token": plain, "role": role.value}))
    else:
        out.print(plain)
        err.print(f"token {principal.token_id} for {name} ({role.value}); it is not shown again")


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id")]) -> None:
    """Revoke a token by id."""
    db = control_database(ControlSettings().database_url)
    with db.session() as session:
        if not revoke_token(session, token_id):
            err.print(f"error: no live token {token_id}")
            raise typer.Exit(EXIT_PROBLEMS)
    out.print(f"revoked {token_id}")


def publish(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory to build and publish")],
    overlay: OverlayOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Build, test and sign a bundle, then publish it to the control plane."""
    settings = ControlSettings()
    opa = Opa(find_opa(settings.opa_bin))
    try:
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
    with client(settings, url, token) as api:
        result = api.publish(built.path.read_bytes())
    if as_json:
        out.print_json(json.dumps(result))
    else:
        verb = "published" if result["created"] else "already published"
        out.print(f"[green]{verb}[/green] {result['bundle']} revision {result['revision']}")


def fleet(
    region: Annotated[str | None, typer.Option(help="Only this region")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Every enforcer with the revision it holds and has active, and its errors."""
    settings = ControlSettings()
    with client(settings, url, token) as api:
        result = api.fleet(region)
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
