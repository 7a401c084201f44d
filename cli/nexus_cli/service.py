"""Running the control plane, and the commands that talk to it: tokens, publish, fleet."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexus_cli.client import ControlPlaneClient
from nexus_cli.console import JsonFlag, OverlayOption, TokenOption, UrlOption, err, out
from nexus_cli.errors import EXIT_ENVIRONMENT, EXIT_PROBLEMS
from nexus_control.access.keyring import DEFAULT_ROTATION_WINDOW_S, KeyPurpose
from nexus_control.access.tokens import Role, TokenError, create_token, revoke_token
from nexus_control.authoring.loader import SpecError
from nexus_control.authoring.sources import pack_sources
from nexus_control.settings import ControlSettings
from nexus_control.store.database import control_database
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.replicas import SqliteServeLock

__all__ = [
    "client",
    "fleet",
    "keys_activate",
    "keys_jwks",
    "keys_list",
    "keys_retire",
    "keys_rotate",
    "migrate",
    "publish",
    "serve",
    "tokens_app",
]

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
    from nexus_runtime.server import instrument_app, serve_forever
    from nexus_runtime.tracing import configure_tracing

    # Before the engines and clients exist: the instrumentations patch them.
    configure_tracing("nexus-control-plane")
    settings = ControlSettings()
    audit_settings = audit_settings_in(settings.keys_dir, AuditSettings())
    databases = [settings.database_url]
    if settings.colocate_audit:
        databases.append(audit_settings.database_url)
    with SqliteServeLock(databases):
        plane = create_control_plane(settings)
        audit = AuditLog.from_settings(audit_settings) if settings.colocate_audit else None
        app = create_app(plane, audit)
        instrument_app(app)
        serve_forever(app, settings.host, settings.port)


def migrate() -> None:
    """Bring the control plane's and the audit log's schemas to the newest revision.

    Idempotent; the Helm chart runs it as a pre-install/pre-upgrade Job so replicas
    never race each other through a migration.
    """
    from nexus_audit.database import AuditDatabase
    from nexus_audit.settings import AuditSettings

    settings = ControlSettings()
    control = control_database(settings.database_url)
    control.migrate()
    control.dispose()
    audit_url = AuditSettings().database_url
    audit = AuditDatabase(audit_url)
    audit.migrate()
    audit.dispose()
    err.print("migrated the control plane's and the audit log's schemas", markup=False)


def local_actor() -> str:
    """Who runs a command against the database directly: the local user (audited)."""
    return f"local:{getpass.getuser()}"


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="What the token may do")],
    name: Annotated[
        str,
        typer.Option(
            help="Who holds it: the principal's name (1-64 letters, digits, . _ @ - and single "
            "inner spaces); the same name is the same principal"
        ),
    ],
    region: Annotated[
        str | None, typer.Option(help="Enforcer and probe tokens: their region")
    ] = None,
    enforcer: Annotated[
        str | None, typer.Option(help="Enforcer tokens: the one enforcer id it speaks for")
    ] = None,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            help="Gateway tokens: a tenant it may report usage for; finops tokens: a tenant "
            "whose spend it may read (repeat; required for both)"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token in the control plane's database and print it once (audited)."""
    db = control_database(ControlSettings().database_url)
    db.migrate()
    try:
        with db.session() as session:
            plain, principal = create_token(
                session,
                name=name,
                role=role,
                region=region,
                enforcer_id=enforcer,
                tenants=tuple(tenant or ()),
                actor=local_actor(),
            )
    except TokenError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "id": principal.token_id,
                    "principal": principal.principal_id,
                    "token": plain,
                    "role": role.value,
                }
            )
        )
    else:
        out.print(plain)
        err.print(
            f"token {principal.token_id} for {principal.name} (principal "
            f"{principal.principal_id}, {role.value}); it is not shown again",
            markup=False,
        )


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id")]) -> None:
    """Revoke a token by id (audited)."""
    db = control_database(ControlSettings().database_url)
    with db.session() as session:
        if not revoke_token(session, token_id, actor=local_actor()):
            err.print(f"error: no live token {token_id}")
            raise typer.Exit(EXIT_PROBLEMS)
    out.print(f"revoked {token_id}")


def publish(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory to publish")],
    overlay: OverlayOption = None,
    expect_revision: Annotated[
        str | None,
        typer.Option(help="Refuse unless the control plane builds this revision (from `build`)"),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a bundle's sources; the control plane builds, tests, diffs and signs them."""
    settings = ControlSettings()
    try:
        sources = pack_sources(bundle_dir, overlay or ())
    except SpecError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    with client(settings, url, token) as api:
        result = api.publish(sources, expected_revision=expect_revision)
    if as_json:
        out.print_json(json.dumps(result))
        return
    verb = "published" if result["created"] else "already published"
    rollout = result["rollout"]
    out.print(f"[green]{verb}[/green] {result['bundle']} revision {result['revision']}")
    code = [m for m in result["diff"].get("modules", []) if not m.get("exempt")]
    if code:
        out.print(
            f"  policy code changed in {len(code)} module(s): " + ", ".join(m["path"] for m in code)
        )
    if rollout["state"] == "pending_approval":
        out.print(f"  rollout {rollout['id']} waits for a second approver (unsigned until then)")
    elif rollout["state"] == "held":
        held = escape(str(rollout.get("reason")))
        out.print(
            f"  [bold yellow]rollout {rollout['id']} is held[/bold yellow]: {held} (an approver"
            f" may `nexus-policy override {rollout['id']} --reason ...`, or publish a fix)"
        )


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


def _key_table(keys: list[dict[str, object]]) -> Table:
    table = Table(title="Signing keys")
    for column in ("kid", "purpose", "algorithm", "state", "retire after"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            str(key["kid"]),
            str(key["purpose"]),
            str(key["algorithm"]),
            str(key["state"]),
            str(key.get("retire_after") or "")[:19],
        )
    return table


def keys_list(url: UrlOption = None, token: TokenOption = None, as_json: JsonFlag = False) -> None:
    """The control plane's signing keys: kid, purpose, state (public halves only)."""
    with client(ControlSettings(), url, token) as api:
        result = api.get("/v1/keys")
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(_key_table(result["keys"]))


def keys_jwks(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it (default NEXUS_APPROVAL_JWKS_FILE)"),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Fetch the approval keys' public JWKS a local build compiles in (never a private key)."""
    settings = ControlSettings()
    with client(settings, url, token) as api:
        result = api.get("/v1/keys")
    target = out_file or settings.approval_jwks_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(result["approval_jwks"])
    out.print(f"wrote {target}")


def keys_rotate(
    purpose: Annotated[KeyPurpose, typer.Argument(help="bundle-signing or approval-signing")],
    algorithm: Annotated[Algorithm | None, typer.Option(help="Default: the configured one")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a new key in the key provider: trusted from now on, signing once activated."""
    body = {"algorithm": algorithm.value} if algorithm is not None else {}
    with client(ControlSettings(), url, token) as api:
        result = api.post(f"/v1/keys/{purpose.value}/rotate", body)
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"new {purpose.value} key {result['kid']} ({result['algorithm']}): trusted, not yet "
            "signing. Re-render enforcer configs, then `nexus-policy keys activate "
            f"{result['kid']}`"
        )


def keys_activate(
    kid: Annotated[str, typer.Argument(help="The key to sign with from now on")],
    window: Annotated[
        int, typer.Option(help="Seconds the replaced key stays trusted")
    ] = DEFAULT_ROTATION_WINDOW_S,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Sign with ``kid`` from now on; the key it replaces is retired after the window."""
    with client(ControlSettings(), url, token) as api:
        result = api.post(f"/v1/keys/{kid}/activate", {"window_seconds": window})
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(f"{result['kid']} is active; the previous key is trusted for {window} s more")


def keys_retire(
    kid: Annotated[str, typer.Argument(help="The key to trust nowhere from now on")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Trust ``kid`` nowhere from now on (enforcers drop it when their configs are re-rendered)."""
    with client(ControlSettings(), url, token) as api:
        result = api.post(f"/v1/keys/{kid}/retire")
    out.print(f"{result['kid']} is retired")
