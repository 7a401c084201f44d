"""``nexus-policy witness``: run a C2SP tlog-witness for the audit logs you follow.

A witness is meant to run in another region, under another operator, with
its own key and its own storage: ``witness init`` makes the key (and prints
the verifier key the log's policy lists), ``witness serve`` answers
``POST /add-checkpoint``. Settings come from ``NEXUS_WITNESS_*`` (see the
README) or the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from nexus_audit.cosignature import Cosigner
from nexus_audit.note import MalformedKeyError, Verifier
from nexus_audit.witness.service import Witness
from nexus_audit.witness.state import WitnessStore
from nexus_runtime.secretfile import write_secret

__all__ = ["WitnessSettings", "witness_app"]

witness_app = typer.Typer(
    help="A C2SP tlog-witness: cosigns a log's checkpoints that extend what it saw.",
    no_args_is_help=True,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class WitnessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_WITNESS_", extra="ignore")

    key_file: Path = Path(".nexus/witness/witness.key")
    """The witness's private key (PRIVATE+KEY+<name>+<id>+<base64(0x04 || seed)>, mode 0600)."""
    db_file: Path = Path(".nexus/witness/witness.db")
    """The witness's own storage: the latest checkpoint it cosigned, per log."""
    logs: list[str] = []
    """Verifier keys (vkeys) of the logs it follows, JSON list; the key name is the origin."""
    host: str = "127.0.0.1"
    port: int = 8710


def _fail(message: str) -> None:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


@witness_app.command("init")
def init(
    name: Annotated[str, typer.Option(help="The witness's name, a schema-less URL it controls")],
    key_file: Annotated[Path | None, typer.Option(help="Where to write the key")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key")] = False,
) -> None:
    """Create the witness's key (mode 0600) and print its verifier key for log policies."""
    path = key_file or WitnessSettings().key_file
    cosigner = Cosigner.generate(name)
    try:
        write_secret(path, (cosigner.private_key_string() + "\n").encode(), overwrite=force)
    except FileExistsError:
        _fail(f"{path} exists; pass --force to replace it (logs then need the new key)")
    out.print(f"key      {path}")
    out.print(f"verifier {cosigner.key}")


def load_cosigner(path: Path) -> Cosigner:
    try:
        return Cosigner.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MalformedKeyError(f"{path}: {exc}") from None


@witness_app.command("serve")
def serve(
    log: Annotated[
        list[str] | None, typer.Option("--log", help="A log's verifier key (repeatable)")
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="The witness key")] = None,
    db_file: Annotated[Path | None, typer.Option(help="The witness's storage")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
) -> None:
    """Serve POST /add-checkpoint for the logs given (Ctrl-C stops)."""
    from nexus_audit.api.witness import create_witness_app
    from nexus_runtime.server import serve_forever

    settings = WitnessSettings()
    try:
        cosigner = load_cosigner(key_file or settings.key_file)
        verifiers = [Verifier.parse(vkey) for vkey in (log or settings.logs)]
    except MalformedKeyError as exc:
        _fail(str(exc))
        return
    if not verifiers:
        _fail("no log to follow: pass --log <verifier key> or set NEXUS_WITNESS_LOGS")
    store = WitnessStore(db_file or settings.db_file)
    witness = Witness.following(cosigner, verifiers, store)
    err.print(f"witness {cosigner.key} following {', '.join(v.name for v in verifiers)}")
    serve_forever(create_witness_app(witness), host or settings.host, port or settings.port)
