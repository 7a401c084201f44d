"""``nexus-policy dataplane``: render enforcer configs, or run a region's enforcers here.

Enforcers reach the control plane at NEXUS_DATAPLANE_CONTROL_PLANE_URL, by
default the control plane's own URL (NEXUS_URL, else NEXUS_HOST/NEXUS_PORT).
Each enforcer speaks with its own token, bound to its id and region. Without
NEXUS_DATAPLANE_TOKEN (one enforcer's token), ``up`` enrols every enforcer it
starts in the control plane's database: it registers it in the region
(audited) and mints its token there.
"""

from __future__ import annotations

import getpass
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_cli.console import err, out
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.ratelimits import compile_rate_limits
from nexus_control.rollout.fleet import load_fleet
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_control.store.database import control_database
from nexus_dataplane.enforcer import (
    EnforcerHealth,
    EnforcerStack,
    StackOptions,
    enforcer_spec,
    render,
)
from nexus_dataplane.providers import ProviderConfigError, ProviderRoutes
from nexus_dataplane.ratelimit import RateLimitBackend, RateLimitPlan
from nexus_dataplane.settings import DataPlaneSettings
from nexus_runtime.toolchain import find_envoy, find_opa, find_ratelimit, find_redis_server

__all__ = ["app"]

app = typer.Typer(help="Enforcers: Envoy + OPA per gateway pod.", no_args_is_help=True)

HEALTH_INTERVAL_S = 2.0


TRUSTED_STATES = ("next", "active", "retiring")


def trusted_bundle_keys(url: str, token: str) -> list[tuple[str, str, str]] | None:
    """The control plane's trusted bundle keys (kid, algorithm, PEM); None if unreachable."""
    try:
        with ControlPlaneClient(url, token) as api:
            listed = api.get("/v1/keys")["keys"]
    except (ApiCallError, KeyError, TypeError):
        return None
    return [
        (str(k["kid"]), str(k["algorithm"]), str(k["public_pem"]))
        for k in listed
        if k.get("purpose") == "bundle-signing" and k.get("state") in TRUSTED_STATES
    ]


def _options(
    settings: DataPlaneSettings,
    control: ControlSettings,
    region: str,
    token: str,
    credentials: Callable[[str], str] | None = None,
) -> StackOptions:
    """Enforcers trust the control plane's bundle keys (every key of a rotation window),
    or, when it cannot be asked, the one verification key file."""
    control_plane_url = settings.control_plane_url or control.base_url
    trusted = trusted_bundle_keys(control_plane_url, token)
    if trusted:
        (key_id, algorithm, pem), *extra = trusted
    else:
        try:
            pem = settings.verification_key_file.read_text()
        except OSError as exc:
            err.print(
                f"error: cannot read the verification key {settings.verification_key_file}: "
                f"{exc.strerror} (set NEXUS_DATAPLANE_VERIFICATION_KEY_FILE)"
            )
            raise typer.Exit(2) from None
        key_id, algorithm, extra = settings.key_id, "RS256", []
    return StackOptions(
        region=region,
        control_plane_url=control_plane_url,
        token=token,
        key_id=key_id,
        key_algorithm=algorithm,
        extra_keys=tuple(extra),
        verification_key_pem=pem,
        workdir=settings.workdir / region,
        opa_bin=find_opa(control.opa_bin),
        envoy_bin=find_envoy(),
        audit_url=settings.audit_url or control_plane_url,
        body_limits=tuple(sorted(settings.body_limits.items())),
        credentials=credentials,
        metric_tenants=control.metric_tenants,
        shadow_sample_percent=settings.shadow_sample_percent,
        providers=provider_routes(settings.providers_bundle, region),
        budget_reservations=settings.budget_reservations,
    )


def provider_routes(bundle_dir: Path | None, region: str) -> ProviderRoutes | None:
    """The provider clusters of ``bundle_dir`` an enforcer of ``region`` routes chats to."""
    if bundle_dir is None:
        return None
    try:
        config = compile_data(resolve(load_bundle(bundle_dir)), "{}")
        return ProviderRoutes.from_compiled(config, region)
    except SpecError as exc:
        err.print(f"error: {bundle_dir}: the providers cannot be read:\n{exc}", markup=False)
    except ProviderConfigError as exc:
        err.print(f"error: {bundle_dir}: {exc}", markup=False)
    raise typer.Exit(2)


def rate_limit_plan(bundle_dir: Path | None) -> RateLimitPlan | None:
    """The RateLimits of ``bundle_dir`` as Envoy enforces them (None without any)."""
    if bundle_dir is None:
        return None
    try:
        policy = resolve(load_bundle(bundle_dir))
    except SpecError as exc:
        err.print(f"error: {bundle_dir}: the rate limits cannot be read:\n{exc}", markup=False)
        raise typer.Exit(2) from None
    if not policy.rate_limits:
        return None
    return RateLimitPlan.from_config(compile_rate_limits(policy.rate_limits))


def _rate_limit_backend(
    settings: DataPlaneSettings, plan: RateLimitPlan | None, region: str
) -> RateLimitBackend | None:
    if plan is None or not plan.shared:
        return None
    return RateLimitBackend(
        plan,
        settings.workdir / region,
        ratelimit_bin=find_ratelimit(settings.ratelimit_bin),
        redis_bin=None if settings.redis_url else find_redis_server(),
        redis_url=settings.redis_url,
    )


def _credentials(
    settings: DataPlaneSettings, control: ControlSettings, region: str, count: int
) -> Callable[[str], str]:
    """Each enforcer's own token: NEXUS_DATAPLANE_TOKEN for a single enforcer, otherwise
    enrolled (registered and minted) in the control plane's database as it starts."""
    if settings.token:
        if count != 1:
            err.print(
                "error: NEXUS_DATAPLANE_TOKEN is one enforcer's token; unset it to enrol "
                f"{count} enforcers, or run one enforcer per token"
            )
            raise typer.Exit(2)
        given = settings.token
        return lambda _: given
    db = control_database(control.database_url)
    db.migrate()
    declared = load_fleet(control.fleet_file).declared if control.fleet_file else {}
    actor = f"local:{getpass.getuser()}"
    minted: dict[str, str] = {}

    def token_of(enforcer_id: str) -> str:
        if enforcer_id not in minted:
            with db.session() as session:
                minted[enforcer_id] = enrol_enforcer(session, declared, enforcer_id, region, actor)
            err.print(f"enrolled enforcer {enforcer_id} in region {region} with its own token")
        return minted[enforcer_id]

    return token_of


@app.command("render")
def render_cmd(
    region: Annotated[str, typer.Option(help="Region of the enforcer")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the configs to")],
    enforcer_id: Annotated[str | None, typer.Option("--enforcer-id")] = None,
    token: Annotated[
        str | None, typer.Option(help="Enforcer token (default from settings)")
    ] = None,
    upstream_port: Annotated[int, typer.Option(help="The gateway upstream's port")] = 8080,
) -> None:
    """Write one enforcer's OPA config and Envoy bootstrap, validated by OPA and Envoy."""
    settings = DataPlaneSettings()
    options = _options(
        settings, ControlSettings(), region, token or settings.token or "<enforcer token>"
    )
    spec = enforcer_spec(options, enforcer_id or f"{region}-1", upstream_port)
    opa_path, envoy_path = render(
        spec, out_dir, opa_bin=options.opa_bin, envoy_bin=options.envoy_bin
    )
    out.print(f"wrote {opa_path} and {envoy_path} (both validated)")


def _table(region: str, stack: EnforcerStack, health: list[EnforcerHealth]) -> Table:
    table = Table(title=f"Region {region}: enforcers (Ctrl-C stops them)")
    for column in (
        "enforcer",
        "gateway (Envoy)",
        "OPA",
        "ext_authz (gRPC)",
        "bundles active",
        "Envoy",
    ):
        table.add_column(column)
    by_id = {e.id: e for e in stack.enforcers}
    for h in health:
        e = by_id[h.id]
        table.add_row(
            h.id,
            e.gateway_url if e.envoy is not None else "-",
            f"{e.opa_url} " + ("ok" if h.opa else "[red]down[/red]"),
            f"127.0.0.1:{e.spec.grpc_port}",
            "yes" if h.bundles else "[yellow]not yet[/yellow]",
            "-" if h.envoy is None else ("ok" if h.envoy else "[red]down[/red]"),
        )
    return table


@app.command("up")
def up_cmd(
    region: Annotated[str, typer.Option(help="Region whose enforcers to run")],
    enforcers: Annotated[int, typer.Option(min=1, max=50, help="How many Envoy + OPA pairs")] = 1,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: run until Ctrl-C)")
    ] = None,
) -> None:
    """Start real OPA + Envoy enforcers and a stand-in upstream; supervise until Ctrl-C."""
    settings = DataPlaneSettings()
    control = ControlSettings()
    credentials = _credentials(settings, control, region, enforcers)
    # The first enforcer's token also asks the control plane for its bundle keys.
    first = credentials(f"{region}-1")
    plan = rate_limit_plan(settings.rate_limits_bundle)
    backend = _rate_limit_backend(settings, plan, region)
    options = _options(settings, control, region, first, credentials)
    options = replace(
        options, rate_limits=plan, ratelimit_port=backend.grpc_port if backend else None
    )
    stack = EnforcerStack(options, enforcers)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        if backend is not None:
            backend.start()
            err.print(
                f"ratelimit service 127.0.0.1:{backend.grpc_port} for "
                f"{len(plan.shared) if plan else 0} shared limit(s)",
                markup=False,
            )
        stack.start(wait_for_bundles=False)
        for enforcer in stack.enforcers:
            # One plain line per enforcer as soon as it is up, for scripts and people alike.
            err.print(
                f"{enforcer.id}: gateway {enforcer.gateway_url if enforcer.envoy else '-'} "
                f"opa {enforcer.opa_url} ext_authz 127.0.0.1:{enforcer.spec.grpc_port} "
                f"(control plane {options.control_plane_url})",
                markup=False,
            )
        deadline = time.monotonic() + seconds if seconds is not None else None
        with Live(_table(region, stack, stack.health()), console=out, refresh_per_second=1) as live:
            while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
                stopping.wait(HEALTH_INTERVAL_S)
                live.update(_table(region, stack, stack.health()))
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        if backend is not None:
            backend.stop()
        err.print("enforcers stopped")
