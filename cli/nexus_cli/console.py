"""What every command prints with, and the options many share."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = [
    "BundleDir",
    "FormatOption",
    "JsonFlag",
    "OutputFormat",
    "OverlayOption",
    "TokenOption",
    "UrlOption",
    "err",
    "out",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for CI")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
BundleDir = Annotated[
    Path, typer.Argument(help="Bundle directory (holds bundle.yaml)", show_default=False)
]
OverlayOption = Annotated[
    list[Path] | None,
    typer.Option("--overlay", help="Extra spec directory merged into the bundle (repeatable)"),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token (default NEXUS_ADMIN_TOKEN)")
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Control plane URL (default NEXUS_URL)")
]
