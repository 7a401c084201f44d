"""``nexus-policy slo-rules``: the Prometheus rules of a bundle's SLOs specs."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer

from nexus_cli.console import BundleDir, err, out
from nexus_cli.errors import EXIT_PROBLEMS
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.slo_rules import render_slo_rules

__all__ = ["EXIT_STALE", "slo_rules"]

EXIT_STALE = 1
"""``--check``: the file differs from what the specs generate."""


def slo_rules(
    bundle_dir: BundleDir,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the rules here (default: stdout)")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Fail if --output differs from what would be written")
    ] = False,
) -> None:
    """Recording rules and burn-rate alerts for the SLOs specs of a bundle."""
    try:
        policy = resolve(load_bundle(bundle_dir))
    except SpecError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        err.print(f"{len(exc.problems)} problem(s); no rules generated")
        raise typer.Exit(EXIT_PROBLEMS) from None
    if not policy.capabilities:
        err.print(f"{bundle_dir} declares no capabilities (kind SLOs); no rules generated")
        raise typer.Exit(EXIT_PROBLEMS)
    text = render_slo_rules(policy.capabilities, source=str(bundle_dir))
    if output is None:
        out.print(text, end="", markup=False)
        return
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            delta = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                str(output),
                "generated",
                n=1,
            )
            err.print("".join(list(delta)[:60]), markup=False)
            err.print(
                f"{output} is not what {bundle_dir}'s SLOs generate; run: "
                f"nexus-policy slo-rules {bundle_dir} -o {output}"
            )
            raise typer.Exit(EXIT_STALE)
        out.print(f"{output} is up to date")
        return
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output} ({len(policy.capabilities)} capabilities)")
