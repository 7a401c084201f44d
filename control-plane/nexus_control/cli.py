"""The ``nexus-policy`` command line: the policy author's loop and the operator's tools.

Exit codes: 0 success, 1 the input has problems (specs, Rego, tests), 2 usage
or environment errors (a missing tool or key), 3 ``diff --fail-on-widening``
found a widening change.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nexus_audit import cli as audit_cli
from nexus_audit.settings import AuditSettings
from nexus_control import cli_rollout, cli_service
from nexus_control.bundle import BuildError, BuildOptions, build_bundle, read_bundle
from nexus_control.compiler import compile_data
from nexus_control.diff import Effect, PolicyDiff, diff_configs
from nexus_control.keys import SigningKeyError, init_audit_keys, init_keys
from nexus_control.loader import Problem, SpecError, load_bundle
from nexus_control.opa import Opa, OpaError
from nexus_control.policyset import resolve
from nexus_control.settings import ControlSettings
from nexus_control.toolchain import ToolMissingError, doctor, find_opa, required_missing
from nexus_dataplane import cli as dataplane_cli

EXIT_PROBLEMS = 1
EXIT_ENVIRONMENT = 2
EXIT_WIDENING = 3
DEFAULT_COVERAGE_THRESHOLD = 90.0

app = typer.Typer(
    name="nexus-policy",
    help="NexusAI policy control plane: check, test, build and sign OPA bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Signing keys of the control plane.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(cli_service.tokens_app, name="tokens")
app.add_typer(dataplane_cli.app, name="dataplane")
app.command("serve")(cli_service.serve)
app.command("publish")(cli_service.publish)
app.command("fleet")(cli_service.fleet_cmd)
app.add_typer(cli_rollout.rollout_app, name="rollout")
app.add_typer(audit_cli.audit_app, name="audit")
app.add_typer(audit_cli.evidence_app, name="evidence")
for _verb in ("approve", "promote", "pause", "resume", "rollback"):
    app.command(_verb)(getattr(cli_rollout, _verb))

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for CI")
]
BundleDir = Annotated[
    Path, typer.Argument(help="Bundle directory (holds bundle.yaml)", show_default=False)
]
OverlayOption = Annotated[
    list[Path] | None,
    typer.Option("--overlay", help="Extra spec directory merged into the bundle (repeatable)"),
]


def _opa(settings: ControlSettings) -> Opa:
    try:
        return Opa(find_opa(settings))
    except ToolMissingError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ENVIRONMENT) from None


def _print_problems(problems: list[Problem], fmt: OutputFormat, *, summary: str) -> None:
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps({"ok": False, "problems": [p.as_dict() for p in problems]}))
        return
    for problem in problems:
        # Plain text, one per line: the form editors and CI annotate.
        sys.stderr.write(f"{problem}\n")
    err.print(f"[red]{summary}[/red]")


@app.command()
def check(
    bundle_dir: BundleDir,
    fmt: FormatOption = OutputFormat.TEXT,
    overlay: OverlayOption = None,
) -> None:
    """Validate a bundle's specs: schema and cross-references, every problem at once."""
    try:
        sources = load_bundle(bundle_dir, overlay or ())
        policy = resolve(sources)
    except SpecError as exc:
        _print_problems(exc.problems, fmt, summary=f"{len(exc.problems)} problem(s) found")
        raise typer.Exit(EXIT_PROBLEMS) from None
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
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps({"ok": True, "bundle": policy.name, "counts": counts}))
    else:
        summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
        out.print(f"[green]ok[/green] {policy.name}: {summary}")


@app.command()
def build(
    bundle_dir: BundleDir,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default NEXUS_DIST_DIR)")
    ] = None,
    signing_key: Annotated[
        Path | None, typer.Option(help="PEM RSA key that signs the bundle")
    ] = None,
    key_id: Annotated[str | None, typer.Option(help="Key id enforcers verify with")] = None,
    approval_key: Annotated[
        Path | None, typer.Option(help="PEM P-256 key whose public part verifies approvals")
    ] = None,
    overlay: OverlayOption = None,
    fmt: FormatOption = OutputFormat.TEXT,
) -> None:
    """Compile, check, test and sign a bundle into dist/<bundle>-<revision>.tar.gz."""
    settings = ControlSettings()
    options = BuildOptions(
        signing_key=signing_key or settings.signing_key_path,
        key_id=key_id or settings.signing_key_id,
        approval_key=approval_key or settings.approval_key_path,
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
    except SigningKeyError as exc:
        err.print(f"error: {exc}; nothing built")
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    result = {
        "bundle": built.name,
        "revision": built.revision,
        "path": str(built.path),
        "sha256": built.sha256,
        "size": built.size,
        "git_commit": built.git_commit,
        "tests": built.tests_run,
    }
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"[green]built[/green] {built.path} ({built.size} bytes)\n"
        f"  revision  {built.revision}\n"
        f"  commit    {built.git_commit or '(not in git)'}\n"
        f"  tests     {built.tests_run} passed\n"
        f"  signed    {options.key_id} (RS256)"
    )


def _config_of(path: Path) -> dict[str, object]:
    """``data.nexus.config`` of a bundle directory or a built archive."""
    if path.is_file():
        contents = read_bundle(path)
        config = contents.data.get("nexus", {}).get("config")
        if not isinstance(config, dict):
            raise BuildError(f"{path} holds no data.nexus.config")
        return config
    policy = resolve(load_bundle(path))
    return compile_data(policy, approval_jwks="")


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="Old bundle directory or .tar.gz")],
    new: Annotated[Path, typer.Argument(help="New bundle directory or .tar.gz")],
    fmt: FormatOption = OutputFormat.TEXT,
    fail_on_widening: Annotated[
        bool, typer.Option(help="Exit 3 when any change widens access")
    ] = False,
) -> None:
    """Semantic diff of two policies; flags every change that widens access."""
    try:
        result = diff_configs(_config_of(old), _config_of(new))
    except SpecError as exc:
        _print_problems(exc.problems, fmt, summary="cannot diff: the specs have problems")
        raise typer.Exit(EXIT_PROBLEMS) from None
    except BuildError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_PROBLEMS) from None
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps(result.as_dict()))
    else:
        _print_diff(result)
    if fail_on_widening and result.widens:
        raise typer.Exit(EXIT_WIDENING)


_EFFECT_STYLE = {Effect.WIDENS: "bold red", Effect.NARROWS: "green", Effect.NEUTRAL: "dim"}


def _print_diff(result: PolicyDiff) -> None:
    if not result.changes:
        out.print("no semantic changes")
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


@app.command("test")
def rego_test_cmd(
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
    targets = [_rego_dir(p) for p in (paths or [Path("rego")])]
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


@app.command("doctor")
def doctor_cmd() -> None:
    """Show every tool the project uses: path, version, or how to install it."""
    statuses = doctor(ControlSettings())
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


@app.command()
def demo() -> None:
    """Run the whole flow on this machine and print a table of decisions."""
    from nexus_control.demo import run_demo

    raise typer.Exit(run_demo(out, err))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
