"""The policy author's loop: check, test, build, diff; keys, throwaway credentials, doctor."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nexus_audit.settings import AuditSettings
from nexus_cli.console import BundleDir, FormatOption, OutputFormat, OverlayOption, err, out
from nexus_cli.errors import EXIT_ENVIRONMENT, EXIT_PROBLEMS, EXIT_WIDENING
from nexus_contract.decision import SCHEMAS_DIR
from nexus_contract.wire import POLICY_ROOTS
from nexus_control.access.signing_keys import init_audit_keys, init_keys
from nexus_control.authoring.bundle import (
    DEV_KEY_NOTE,
    BuildError,
    BuildOptions,
    build_bundle,
    policy_modules,
    read_bundle,
)
from nexus_control.authoring.capabilities import capabilities_file
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.credentials import (
    OVERLAY_FILE,
    grants_for_every_binding,
    throwaway_keys,
)
from nexus_control.authoring.diff import BundleView, Effect, PolicyDiff, diff_bundles
from nexus_control.authoring.loader import Problem, SpecError, load_bundle
from nexus_control.authoring.opa import Opa, OpaError
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.traffic import quality_demands
from nexus_control.settings import ControlSettings
from nexus_dataplane.records import (
    DEV_RECORD_ISSUER,
    RECORD_KEY_FILE,
    RECORD_OVERLAY_FILE,
    create_dev_record_signer,
)
from nexus_runtime.toolchain import doctor as tool_statuses
from nexus_runtime.toolchain import find_opa, required_missing

__all__ = ["build", "check", "demo", "dev_keys", "diff", "doctor", "keys_app", "rego_test"]

DEFAULT_COVERAGE_THRESHOLD = 90.0
DEV_KEY_ID = "nexus-dev-signing"
"""Key id of archives `build` signs locally: no fleet enforcer is configured to trust it."""

keys_app = typer.Typer(help="Signing keys of the control plane.", no_args_is_help=True)


def _opa(settings: ControlSettings) -> Opa:
    return Opa(find_opa(settings.opa_bin))


def _print_problems(problems: list[Problem], fmt: OutputFormat, *, summary: str) -> None:
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps({"ok": False, "problems": [p.as_dict() for p in problems]}))
        return
    for problem in problems:
        # Plain text, one per line: the form editors and CI annotate.
        sys.stderr.write(f"{problem}\n")
    err.print(f"[red]{summary}[/red]")


def check(
    bundle_dir: BundleDir,
    fmt: FormatOption = OutputFormat.TEXT,
    overlay: OverlayOption = None,
) -> None:
    """Validate a bundle: specs (schema, cross-references) and its Rego against the capabilities.

    Every problem at once, as file:line:column; a module calling a built-in
    the bundle may not use (``http.send``, ``net.*`` …) is one of them. Quality
    thresholds are checked against stored evaluations at publish, by the control
    plane: check lists what they gate but cannot see the evaluations.
    """
    try:
        sources = load_bundle(bundle_dir, overlay or ())
        policy = resolve(sources)
    except SpecError as exc:
        _print_problems(exc.problems, fmt, summary=f"{len(exc.problems)} problem(s) found")
        raise typer.Exit(EXIT_PROBLEMS) from None
    rego_problems = _check_rego(policy.policy_dir)
    if rego_problems:
        _print_problems(rego_problems, fmt, summary=f"{len(rego_problems)} Rego problem(s) found")
        raise typer.Exit(EXIT_PROBLEMS)
    counts = {
        "tenants": len(policy.tenants),
        "roles": len(policy.roles),
        "bindings": len(policy.bindings),
        "api_keys": len(policy.api_keys),
        "tools": len(policy.tools),
        "prompts": len(policy.prompts),
        "rollouts": len(policy.flags),
        "regions": len(policy.regions),
    }
    gated = [
        {"subject": str(d.subject), "route": d.route, "at": f"{d.file}:{d.line}:{d.column}"}
        for d in quality_demands(sources)
    ]
    if fmt is OutputFormat.JSON:
        report = {"ok": True, "bundle": policy.name, "counts": counts, "quality_gated": gated}
        out.print_json(json.dumps(report))
        return
    summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
    out.print(f"[green]ok[/green] {policy.name}: {summary}")
    if gated:
        out.print(
            f"{len(gated)} prompt version(s) and model(s) need a passing evaluation at publish; "
            "check cannot see evaluations (the control plane checks them when you publish):",
            markup=False,
        )
        for demand in gated:
            out.print(f"  {demand['at']}: {demand['subject']}", markup=False)


def _check_rego(policy_dir: Path) -> list[Problem]:
    """``opa check --strict`` of the library: shipped modules against the bundle capabilities,
    tests against the test capabilities."""
    opa = _opa(ControlSettings())
    shipped = [policy_dir / rel for rel in policy_modules(policy_dir)]
    problems: list[Problem] = []
    for paths, for_tests in ((shipped, False), ([policy_dir], True)):
        if not paths:
            continue
        try:
            opa.check(paths, strict=True, capabilities=capabilities_file(opa, for_tests=for_tests))
        except OpaError as exc:
            problems += exc.problems or [Problem(str(policy_dir), 1, 1, str(exc))]
            break
    return problems


def build(
    bundle_dir: BundleDir,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default NEXUS_DIST_DIR)")
    ] = None,
    signing_key: Annotated[
        Path | None, typer.Option(help="PEM RSA key that signs the bundle")
    ] = None,
    key_id: Annotated[str | None, typer.Option(help="Key id enforcers verify with")] = None,
    approval_jwks: Annotated[
        Path | None,
        typer.Option(help="Public JWKS (or PEM public key) that verifies approvals"),
    ] = None,
    overlay: OverlayOption = None,
    fmt: FormatOption = OutputFormat.TEXT,
) -> None:
    """Compile, check, test and sign a bundle with a dev key into dist/ (local work and CI).

    The archive is signed with a local key no fleet enforcer trusts: a fleet's
    revisions are built and signed by the control plane from `publish`ed sources.
    """
    settings = ControlSettings()
    options = BuildOptions(
        signing_key=signing_key or settings.signing_key_path,
        key_id=key_id or DEV_KEY_ID,
        approval_jwks=approval_jwks or settings.approval_jwks_path,
        dist_dir=out_dir or settings.dist_dir,
    )
    opa = _opa(settings)
    try:
        built = build_bundle(bundle_dir, opa, options, overlays=overlay or ())
    except SpecError as exc:
        _print_problems(exc.problems, fmt, summary=f"{len(exc.problems)} problem(s); nothing built")
        raise typer.Exit(EXIT_PROBLEMS) from None
    except BuildError as exc:
        if exc.problems:
            _print_problems(exc.problems, fmt, summary=f"{str(exc).splitlines()[0]}; nothing built")
        else:
            err.print(f"error: {exc}; nothing built")
        raise typer.Exit(EXIT_PROBLEMS) from None
    result = {
        "bundle": built.name,
        "revision": built.revision,
        "path": str(built.path),
        "sha256": built.sha256,
        "size": built.size,
        "git_commit": built.git_commit,
        "tests": built.tests_run,
        "key_id": options.key_id,
    }
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"[green]built[/green] {built.path} ({built.size} bytes)\n"
        f"  revision  {built.revision}\n"
        f"  commit    {built.git_commit or '(not in git)'}\n"
        f"  tests     {built.tests_run} passed\n"
        f"  signed    {options.key_id} (RS256): {DEV_KEY_NOTE}"
    )


def _view_of(path: Path) -> BundleView:
    """What a diff compares of a bundle directory or a built archive."""
    if path.is_file():
        contents = read_bundle(path)
        config = contents.data.get("nexus", {}).get("config")
        if not isinstance(config, dict):
            raise BuildError(f"{path} holds no data.nexus.config")
        return BundleView(config, contents.modules, tuple(contents.roots))
    policy = resolve(load_bundle(path))
    compiled: CompiledConfig = compile_data(policy, approval_jwks="")
    return BundleView(compiled, policy_modules(policy.policy_dir), POLICY_ROOTS)


def diff(
    old: Annotated[Path, typer.Argument(help="Old bundle directory or .tar.gz")],
    new: Annotated[Path, typer.Argument(help="New bundle directory or .tar.gz")],
    fmt: FormatOption = OutputFormat.TEXT,
    fail_on_widening: Annotated[
        bool, typer.Option(help="Exit 3 when a change widens access or changes policy code")
    ] = False,
) -> None:
    """Semantic diff of two policies; flags every change that widens access."""
    try:
        result = diff_bundles(_view_of(old), _view_of(new))
    except SpecError as exc:
        _print_problems(exc.problems, fmt, summary="cannot diff: the specs have problems")
        raise typer.Exit(EXIT_PROBLEMS) from None
    except BuildError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_PROBLEMS) from None
    if fmt is OutputFormat.JSON:
        out.print_json(result.model_dump_json())
    else:
        _print_diff(result)
    if fail_on_widening and result.needs_second_approver:
        raise typer.Exit(EXIT_WIDENING)


_EFFECT_STYLE = {Effect.WIDENS: "bold red", Effect.NARROWS: "green", Effect.NEUTRAL: "dim"}


def _print_modules(result: PolicyDiff) -> None:
    for module in result.modules:
        rules = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", module.rules_added),
                ("removed", module.rules_removed),
                ("changed", module.rules_changed),
            )
            if names
        ]
        out.print(
            f"[bold]{module.status}[/bold] {module.path} (package {module.package})"
            + (f": rules {'; '.join(rules)}" if rules else "")
            + (" [dim](exempt)[/dim]" if module.exempt else "")
        )
        out.print(module.diff, markup=False, highlight=False)


def _print_diff(result: PolicyDiff) -> None:
    _print_modules(result)
    if result.modules:
        out.print(
            f"[bold red]policy code changed in {len(result.modules)} module(s): "
            "a second approver is needed[/]"
        )
    if not result.changes:
        out.print("no semantic changes to the data")
        return
    table = Table(title="Policy changes", show_lines=False)
    for column in ("area", "subject", "change", "effect"):
        table.add_column(column)
    for change in result.changes:
        style = _EFFECT_STYLE[change.effect]
        table.add_row(
            change.area, change.subject, change.detail, f"[{style}]{change.effect}[/{style}]"
        )
    out.print(table)
    widening = sum(c.effect is Effect.WIDENS for c in result.changes)
    if widening:
        out.print(f"[bold red]{widening} change(s) widen access: a second approver is needed[/]")
    else:
        out.print("no change widens access")


def rego_test(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Rego directories or bundle directories (default: rego/)"),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Minimum coverage in percent")
    ] = DEFAULT_COVERAGE_THRESHOLD,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the Rego tests with the real OPA and enforce a coverage threshold."""
    settings = ControlSettings()
    opa = _opa(settings)
    targets = [*(_rego_dir(p) for p in (paths or [Path("rego")])), SCHEMAS_DIR]
    try:
        results = opa.test(targets)
    except OpaError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        err.print(f"error: {exc if not exc.problems else 'opa test could not run the tests'}")
        raise typer.Exit(EXIT_PROBLEMS) from None
    failed = [r for r in results if not r.passed]
    for r in results:
        if verbose or not r.passed:
            mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
            out.print(f"{mark} {r.package}.{r.name} ({r.file}:{r.row}) {r.message or ''}")
    if failed:
        err.print(f"[red]{len(failed)} of {len(results)} Rego tests failed[/red]")
        raise typer.Exit(EXIT_PROBLEMS)
    coverage = opa.coverage(targets)
    table = Table(title=f"Rego coverage ({len(results)} tests passed)")
    table.add_column("file")
    table.add_column("coverage", justify="right")
    table.add_column("uncovered lines")
    for name, pct in coverage.files.items():
        if name.endswith("_test.rego"):
            continue
        gaps = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in coverage.uncovered[name])
        table.add_row(name, f"{pct:.1f}%", gaps[:60])
    out.print(table)
    if coverage.percent < threshold:
        err.print(f"[red]coverage {coverage.percent:.1f}% is below {threshold:.0f}%[/red]")
        raise typer.Exit(EXIT_PROBLEMS)
    out.print(f"[green]coverage {coverage.percent:.1f}% (threshold {threshold:.0f}%)[/green]")


def _rego_dir(path: Path) -> Path:
    """A bundle directory's Rego is its policy library plus its own tests."""
    if (path / "bundle.yaml").exists():
        return load_bundle(path).policy_dir
    return path


def doctor() -> None:
    """Show every tool the project uses: path, version, or how to install it."""
    statuses = tool_statuses(ControlSettings().opa_bin)
    table = Table(title="nexus-policy toolchain")
    for column in ("tool", "purpose", "version", "path / install with"):
        table.add_column(column)
    for s in statuses:
        if s.found:
            table.add_row(f"[green]{s.name}[/green]", s.purpose, s.version or "?", str(s.path))
        else:
            table.add_row(f"[red]{s.name}[/red]", s.purpose, "[red]missing[/red]", s.install)
    out.print(table)
    missing = required_missing(statuses)
    if missing:
        err.print(
            "[red]missing required tools: "
            + ", ".join(s.name for s in missing)
            + " — run `scripts/bootstrap`[/red]"
        )
        raise typer.Exit(EXIT_ENVIRONMENT)


@keys_app.command("init")
def keys_init(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write the keys (default NEXUS_KEYS_DIR)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing keys")] = False,
) -> None:
    """Create the bundle-signing (RSA) and approval (P-256) keys, mode 0600."""
    target = directory or ControlSettings().keys_dir
    paths = init_keys(target, overwrite=overwrite)
    audit = init_audit_keys(target, AuditSettings(), overwrite=overwrite)
    out.print(
        f"bundle signing key  {paths.signing}\napproval key        {paths.approval}\n"
        f"audit log key       {audit.log_key}\naudit master key    {audit.master_key}"
    )


def dev_keys(
    bundle_dir: BundleDir = Path("bundles/gateway"),
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where to write the overlay (hashes only)")
    ] = Path(".nexus/dev-keys"),
    fmt: FormatOption = OutputFormat.TEXT,
) -> None:
    """Throwaway API keys for every (tenant, role) the bundle binds, as an overlay,
    and a development record store (its key 0600) that the overlay trusts.

    Build or publish with ``--overlay DIR`` and call the gateway with the keys
    printed here: they are shown once and never written down.
    """
    policy = resolve(load_bundle(bundle_dir))
    grants = grants_for_every_binding(policy)
    plain = throwaway_keys(grants, out_dir)
    create_dev_record_signer(out_dir, sorted(policy.tenants))
    record_key = out_dir / RECORD_KEY_FILE
    if fmt is OutputFormat.JSON:
        keys = [
            {"id": g.key_id, "tenant": g.tenant, "roles": list(g.roles), "key": plain[g.key_id]}
            for g in grants
        ]
        out.print_json(
            json.dumps(
                {
                    "overlay": str(out_dir / OVERLAY_FILE),
                    "keys": keys,
                    "record_signer": {"issuer": DEV_RECORD_ISSUER, "key": str(record_key)},
                }
            )
        )
        return
    table = Table(title=f"Throwaway API keys for {policy.name} (shown once)")
    for column in ("key id", "tenant", "role", "key"):
        table.add_column(column)
    for grant in grants:
        table.add_row(grant.key_id, grant.tenant, ", ".join(grant.roles), plain[grant.key_id])
    out.print(table)
    err.print(
        f"wrote {out_dir / OVERLAY_FILE} (hashes only); build or publish with "
        f"--overlay {out_dir}, then send Authorization: Bearer <key> and x-nexus-tenant"
    )
    err.print(
        f"wrote a dev chat store key {record_key} (0600; issuer {DEV_RECORD_ISSUER}) and "
        f"{out_dir / RECORD_OVERLAY_FILE} trusting it: sign x-nexus-record-token with "
        "nexus_dataplane.records.RecordSigner"
    )


def demo() -> None:
    """Run the whole flow on this machine and print a table of decisions."""
    from nexus_cli.demo.run import run_demo

    raise typer.Exit(run_demo(out, err))
