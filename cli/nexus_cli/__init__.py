"""``nexus-policy``: the one command line, and the one place that imports every package.

The command modules are assembled here: the policy author's loop
(`nexus_cli.authoring`), running and calling the service (`nexus_cli.service`),
rollouts (`nexus_cli.rollout`), enforcers (`nexus_cli.dataplane`), the audit
log and evidence (`nexus_audit.cli`), the witness (`nexus_audit.witness.cli`),
and the demo (`nexus_cli.demo`). Every
`NexusError` a command raises is printed once and mapped to its exit code
(`nexus_cli.errors`).
"""

from __future__ import annotations

import sys

import typer

from nexus_audit import cli as audit_cli
from nexus_audit.witness import cli as witness_cli
from nexus_cli import authoring, budgets, dataplane, replay, rollout, service, shadow, slo
from nexus_cli.console import err
from nexus_cli.errors import exit_code
from nexus_contract.errors import NexusError

__all__ = ["app", "main"]

app = typer.Typer(
    name="nexus-policy",
    help="NexusAI policy control plane: check, test, build and sign OPA bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in ("check", "build", "diff", "doctor", "demo"):
    app.command(command)(getattr(authoring, command))
app.command("test")(authoring.rego_test)
app.command("dev-keys")(authoring.dev_keys)
app.command("slo-rules")(slo.slo_rules)
for verb in ("list", "jwks", "rotate", "activate", "retire"):
    authoring.keys_app.command(verb)(getattr(service, f"keys_{verb}"))
app.add_typer(authoring.keys_app, name="keys")
app.command("serve")(service.serve)
app.command("migrate")(service.migrate)
app.command("publish")(service.publish)
app.command("fleet")(service.fleet)
app.command("replay")(replay.replay)
app.add_typer(service.tokens_app, name="tokens")
app.add_typer(rollout.rollout_app, name="rollout")
app.add_typer(shadow.shadow_app, name="shadow")
app.add_typer(budgets.budgets_app, name="budgets")
for verb in ("approve", "override", "promote", "pause", "resume", "rollback"):
    app.command(verb)(getattr(rollout, verb))
app.add_typer(dataplane.app, name="dataplane")
app.add_typer(audit_cli.audit_app, name="audit")
app.add_typer(audit_cli.evidence_app, name="evidence")
app.add_typer(witness_cli.witness_app, name="witness")


def main() -> None:
    try:
        app()
    except NexusError as error:
        err.print(f"error: {error.diagnostics()}", markup=False)
        sys.exit(exit_code(error))
