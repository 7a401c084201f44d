"""``nexus-policy audit`` and ``nexus-policy evidence``: the audit log from the command line.

Both work directly on the audit database (``NEXUS_AUDIT_DATABASE_URL``) and
key files (`nexus_audit.settings.AuditSettings`, which honours
``NEXUS_KEYS_DIR``); mount them into the main CLI with
``app.add_typer(audit_app, name="audit")`` and
``app.add_typer(evidence_app, name="evidence")``. Erasure is a two-person act
between principals, so ``audit erase …`` goes through the audit API with the
caller's token (``NEXUS_URL``, ``NEXUS_ADMIN_TOKEN``), never the database.

Exit codes: 0 success; 1 verification failed (the log or an archive was
altered); 2 usage or environment errors (missing keys, unknown framework).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from nexus_audit import evidence as evidence_archive
from nexus_audit.catalog import FRAMEWORKS, CatalogError, UnknownControlError
from nexus_audit.component import main as component_definition_main
from nexus_audit.coverage import CoverageReport, UnknownFrameworkError, coverage
from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import Pkcs11KeyWrapper
from nexus_audit.erasure import purge_expired, retention_from_config
from nexus_audit.journal import CheckpointJournal
from nexus_audit.keyfiles import KeyFileError, init_log_key, init_master_key, load_log_key
from nexus_audit.note import MalformedKeyError, Verifier
from nexus_audit.policy import PolicyError, TlogPolicy
from nexus_audit.service import AuditError, AuditLog
from nexus_audit.settings import AuditSettings, MasterKeyProvider
from nexus_audit.verify import LogVerificationError, verify_log

__all__ = ["audit_app", "evidence_app"]

EXIT_FAILED = 1
EXIT_ENVIRONMENT = 2

audit_app = typer.Typer(
    help="The Merkle audit log: keys, verification, checkpoints, proofs, coverage, GDPR.",
    no_args_is_help=True,
)
evidence_app = typer.Typer(
    help="Evidence packages per control and period, verifiable offline.", no_args_is_help=True
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an RFC 3339 time or a YYYY-MM-DD date"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for machines")
]
FrameworkOption = Annotated[
    str,
    typer.Option(
        help=", ".join(spec.cli_name for spec in FRAMEWORKS[:-1]) + f" or {FRAMEWORKS[-1].cli_name}"
    ),
]
SinceOption = Annotated[
    datetime,
    typer.Option(parser=_time, help="Start of the period, inclusive (RFC 3339 or YYYY-MM-DD, UTC)"),
]
UntilOption = Annotated[
    datetime,
    typer.Option(parser=_time, help="End of the period, exclusive (RFC 3339 or YYYY-MM-DD, UTC)"),
]
ActorOption = Annotated[str, typer.Option(help="Who is acting, recorded in the log")]


def _fail(message: str, code: int = EXIT_ENVIRONMENT) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _default_actor() -> str:
    return os.environ.get("USER") or "cli"


def _open_log() -> AuditLog:
    try:
        return AuditLog.from_settings(AuditSettings())
    except (KeyFileError, AuditError, CatalogError) as exc:
        _fail(str(exc))


def _verifier(key: str | None) -> Verifier:
    """``key`` as a verifier key string or a file holding one; default: the log key's."""
    try:
        if key is None:
            return load_log_key(AuditSettings().log_key_file).verifier
        path = Path(key)
        text = path.read_text(encoding="utf-8") if path.is_file() else key
        return Verifier.parse(text.strip())
    except (KeyFileError, MalformedKeyError, OSError) as exc:
        _fail(f"no usable log verifier key: {exc}")


# --- audit -----------------------------------------------------------------------


@audit_app.command("init-keys")
def init_keys(
    force: Annotated[bool, typer.Option(help="Replace existing keys (old data is lost)")] = False,
) -> None:
    """Create the log's signing key (and .pub) and the master key, each mode 0600."""
    settings = AuditSettings()
    try:
        signer = init_log_key(settings.log_key_file, settings.origin, force=force)
        if settings.master_key_provider is MasterKeyProvider.PKCS11:
            if settings.pkcs11_module is None or settings.pkcs11_pin_file is None:
                _fail("set NEXUS_AUDIT_PKCS11_MODULE and NEXUS_AUDIT_PKCS11_PIN_FILE")
            pin = settings.pkcs11_pin_file.read_text(encoding="utf-8").strip()
            Pkcs11KeyWrapper.create_key(
                settings.pkcs11_module, settings.pkcs11_token, pin, settings.pkcs11_key_label
            )
            where = f"PKCS#11 {settings.pkcs11_token}/{settings.pkcs11_key_label} (not extractable)"
        else:
            init_master_key(settings.master_key_file, force=force)
            where = str(settings.master_key_file)
    except (KeyFileError, OSError) as exc:
        _fail(str(exc))
    out.print(f"log key    {settings.log_key_file}")
    out.print(f"master key {where}")
    out.print(f"verifier   {signer.verifier}")


@audit_app.command("verify")
def verify(
    key: Annotated[
        str | None, typer.Option(help="Verifier key or key file; default: the log key's")
    ] = None,
    trusted: Annotated[
        list[Path] | None,
        typer.Option(help="A checkpoint an outsider kept: the tree must extend it (repeatable)"),
    ] = None,
) -> None:
    """Recompute the whole log, and check every node, checkpoint and the checkpoint chain."""
    verifier = _verifier(key)
    settings = AuditSettings()
    notes = []
    for path in trusted or ():
        try:
            notes.append(path.read_text(encoding="utf-8"))
        except OSError as exc:
            _fail(f"{path}: {exc}")
    db = AuditDatabase(settings.database_url)
    try:
        report = verify_log(
            db, verifier, journal=CheckpointJournal(settings.checkpoint_journal), trusted=notes
        )
    except LogVerificationError as exc:
        err.print(f"[red]FAILED[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        db.dispose()
    extends = (
        f"; extends the trusted checkpoint(s) of size {', '.join(map(str, report.trusted))}"
        if report.trusted
        else ""
    )
    out.print(
        f"[green]ok[/green] {report.size} leaves, {report.nodes} stored nodes, "
        f"{report.checkpoints} checkpoints and {report.journal_checkpoints} journal "
        f"checkpoints verified in {report.seconds:.2f} s; root {report.root_hash.hex()}{extends}"
    )


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign a checkpoint of the tree as it is now and print it."""
    log = _open_log()
    try:
        signed = log.checkpoint()
    finally:
        log.close()
    out.print(signed.note, end="", markup=False)


@audit_app.command("prove")
def prove(
    decision_id: Annotated[str | None, typer.Option(help="The decision to prove")] = None,
    index: Annotated[int | None, typer.Option(help="Or the leaf index")] = None,
    size: Annotated[
        int | None, typer.Option(help="Checkpoint size to prove against; default the latest")
    ] = None,
) -> None:
    """Print a C2SP tlog-proof of one leaf against a signed checkpoint."""
    if (decision_id is None) == (index is None):
        _fail("give exactly one of --decision-id and --index")
    log = _open_log()
    try:
        proof = log.inclusion_proof(index=index, decision_id=decision_id, size=size)
    except AuditError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        log.close()
    out.print(proof.encode(), end="", markup=False)


@audit_app.command("coverage")
def coverage_cmd(
    framework: FrameworkOption,
    since: SinceOption,
    until: UntilOption,
    fmt: FormatOption = OutputFormat.TEXT,
) -> None:
    """Evidence per control of a framework in [since, until), and the controls with none."""
    log = _open_log()
    try:
        report = coverage(log, framework, since, until)
    except (UnknownFrameworkError, ValueError) as exc:
        _fail(str(exc))
    finally:
        log.close()
    if fmt is OutputFormat.JSON:
        out.print_json(json.dumps(report.as_dict()))
        return
    out.print(coverage_table(report))
    summary = report.as_dict()["summary"]
    out.print(
        f"{summary['with_evidence']} of {summary['controls']} controls have evidence "
        f"({summary['decisions']} decisions)."
    )


@audit_app.command("components")
def components_cmd(
    output: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output)")
    ] = None,
    rego: Annotated[
        Path | None, typer.Option(help="Rego library whose METADATA names controls")
    ] = None,
) -> None:
    """The OSCAL component definition: every control this project implements, and by what."""
    argv = [*(["--out", str(output)] if output else []), *(["--rego", str(rego)] if rego else [])]
    try:
        component_definition_main(argv)
    except (CatalogError, OSError) as exc:
        _fail(str(exc))


def coverage_table(report: CoverageReport) -> Table:
    """The coverage report as a Rich table, controls without evidence dimmed."""
    table = Table(
        title=(
            f"{report.framework.name}: evidence from {report.since:%Y-%m-%d %H:%M} "
            f"to {report.until:%Y-%m-%d %H:%M} UTC"
        )
    )
    table.add_column("Control")
    table.add_column("Title", overflow="fold")
    for name in ("Decisions", "Allowed", "Denied", "Events"):
        table.add_column(name, justify="right")
    for row in report.controls:
        table.add_row(
            row.control.id,
            row.control.title,
            str(row.decisions),
            str(row.allowed),
            str(row.denied),
            str(row.events),
            style=None if row.evidenced else "dim",
        )
    return table


def _api(url: str | None) -> tuple[str, dict[str, str]]:
    base = url or os.environ.get("NEXUS_URL") or "http://127.0.0.1:8700"
    token = os.environ.get("NEXUS_ADMIN_TOKEN")
    if not token:
        _fail("no token: set NEXUS_ADMIN_TOKEN to a compliance token")
    return base.rstrip("/"), {"authorization": f"Bearer {token}"}


def _call(method: str, url: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    base, headers = _api(url)
    try:
        response = httpx.request(method, base + path, headers=headers, json=body, timeout=600)
    except httpx.HTTPError as exc:
        _fail(f"{base}: {exc}")
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        _fail(f"{response.status_code}: {message}", EXIT_FAILED)
    return response.json()


UrlOption = Annotated[str | None, typer.Option(help="The audit API (default NEXUS_URL)")]


@audit_app.command("erase")
def erase_cmd(
    tenant: Annotated[str, typer.Option(help="The tenant")],
    subject: Annotated[
        str | None, typer.Option(help="The subject (x-nexus-subject); omit to erase the tenant")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Request or ticket id, logged (no personal data)")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Request the crypto-shredding of a subject's (or tenant's) payloads; another approves."""
    body: dict[str, Any] = {"tenant": tenant}
    if subject:
        body["subject"] = subject
    if reference:
        body["reference"] = reference
    answer = _call("POST", url, "/v1/audit/erasure", body)
    out.print(
        f"erasure {answer['id']} requested ({answer['scope']} of {answer['tenant']}); a second "
        f"person approves it with `nexus-policy audit erase-approve {answer['id']}`"
    )


@audit_app.command("erase-approve")
def erase_approve(
    request_id: Annotated[str, typer.Argument(help="The erasure request's id")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    url: UrlOption = None,
) -> None:
    """Approve (and run) an erasure another person requested. Irreversible."""
    if not yes and not typer.confirm(f"Destroy the payload keys of erasure {request_id}?"):
        raise typer.Exit(EXIT_FAILED)
    result = _call("POST", url, f"/v1/audit/erasure/{request_id}/approve")
    out.print(
        f"erased: {result['keys_destroyed']} key(s) destroyed, {result['payloads_erased']} "
        f"payload(s) deleted; logged as leaf {result['event_index']} ({result['event_id']})"
    )


@audit_app.command("erasures")
def erasures(
    url: UrlOption = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Erasure requests and their state."""
    answer = _call("GET", url, "/v1/audit/erasure")
    if as_json:
        out.print_json(json.dumps(answer))
        return
    for item in answer["requests"]:
        out.print(
            f"{item['id']}  {item['state']:<9} {item['scope']:<8} {item['tenant']}  "
            f"requested by {item['requested_by']}"
        )


@audit_app.command("purge")
def purge(
    days: Annotated[
        int | None, typer.Option(help="Keep payloads this many days, for every tenant")
    ] = None,
    retention_file: Annotated[
        Path | None,
        typer.Option(
            help="Compiled bundle data (data.json, or its nexus.config): per-tenant "
            "'audit-payloads' retention"
        ),
    ] = None,
    actor: ActorOption = "retention",
) -> None:
    """Delete payloads older than each tenant's audit retention; logged per tenant."""
    if (days is None) == (retention_file is None):
        _fail("give exactly one of --days and --retention-file")
    retention: Callable[[str], int | None]
    if retention_file is not None:
        retention = retention_from_config(_bundle_config(retention_file))
    else:
        assert days is not None
        retention = _every_tenant(days)
    log = _open_log()
    try:
        results = purge_expired(log, retention, actor=actor)
    finally:
        log.close()
    for result in results:
        out.print(
            f"{result.tenant}: {result.payloads} payload(s) older than {result.days} days purged "
            f"(leaf {result.event_index})"
        )
    if not results:
        out.print("nothing to purge")


def _every_tenant(days: int) -> Callable[[str], int | None]:
    return lambda _tenant: days


def _bundle_config(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"{path}: cannot read retention data: {exc}")
    if isinstance(document, dict) and isinstance(document.get("nexus"), dict):
        document = document["nexus"].get("config", {})
    if not isinstance(document, dict):
        _fail(f"{path}: expected the bundle's data.json or its nexus.config object")
    return document


# --- evidence --------------------------------------------------------------------


@evidence_app.command("export")
def export(
    framework: FrameworkOption,
    control: Annotated[str, typer.Option(help="Control id in the framework, e.g. CC6.1")],
    since: SinceOption,
    until: UntilOption,
    out_file: Annotated[Path, typer.Option("--out", help="Archive to write (.tar.gz)")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records")] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="Every tenant's records (and payloads)")
    ] = False,
    actor: ActorOption = "",
) -> None:
    """Write one verifiable evidence archive for a control, period and tenant."""
    if (tenant is None) == (not all_tenants):
        _fail("give --tenant, or --all-tenants to export every tenant's evidence")
    log = _open_log()
    try:
        summary = evidence_archive.export_archive(
            log,
            framework=framework,
            control=control,
            since=since,
            until=until,
            out=out_file,
            actor=actor or _default_actor(),
            tenant=tenant,
        )
    except (UnknownFrameworkError, UnknownControlError, ValueError, AuditError) as exc:
        _fail(str(exc))
    finally:
        log.close()
    out.print(
        f"wrote {summary.path}: {summary.records} record(s) of {summary.framework}:"
        f"{summary.control}, proven against checkpoint {summary.checkpoint_size}"
        + (f" cosigned by {', '.join(summary.cosigners)}" if summary.cosigners else "")
        + f"; sha256 {summary.sha256}"
    )


@evidence_app.command("verify")
def verify_archive(
    archive: Annotated[Path, typer.Argument(help="The evidence archive")],
    key: Annotated[str, typer.Option(help="The log's verifier key, or a file holding it")],
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Your own C2SP tlog-policy (witness keys, quorum); default the archive's"
        ),
    ] = None,
    require_quorum: Annotated[
        bool, typer.Option(help="Refuse an archive whose checkpoint has no witness policy")
    ] = False,
) -> None:
    """Check an evidence archive offline: records, proofs, checkpoint, and the witness quorum."""
    verifier = _verifier(key)
    trusted_policy = None
    if policy is not None:
        try:
            trusted_policy = TlogPolicy.parse(
                policy.read_text(encoding="utf-8"), source=str(policy)
            )
        except (OSError, PolicyError) as exc:
            _fail(f"{policy}: {exc}")
    try:
        verified = evidence_archive.verify_archive(
            archive, verifier, policy=trusted_policy, require_quorum=require_quorum
        )
    except evidence_archive.EvidenceError as exc:
        err.print(f"[red]FAILED[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        _fail(f"{archive}: {exc}")
    out.print(
        f"[green]ok[/green] {verified.records} record(s) of {verified.framework}:"
        f"{verified.control} from {verified.since} to {verified.until}, proven in "
        f"{verified.checkpoint.origin} at tree size {verified.checkpoint.size}"
        + (
            f"; witnessed by {', '.join(verified.cosigners)} (quorum: {verified.quorum})"
            if verified.quorum
            else "; no witness policy"
        )
    )
