"""Grafana dashboards as code: built with the Grafana Foundation SDK, committed as JSON.

``python -m nexus_runtime.dashboards`` writes one file per dashboard into ``deploy/grafana/``;
``--check`` writes nothing and fails when a committed file differs from what this code
renders (the test command runs the same comparison). Every query uses only metric names of
the metric contract (issue 14) and reads the Prometheus the dashboard's ``datasource``
variable names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nexus_runtime.dashboards._board import Board
from nexus_runtime.dashboards.audit import audit
from nexus_runtime.dashboards.budgets import budgets
from nexus_runtime.dashboards.decisions import decisions
from nexus_runtime.dashboards.fleet import fleet
from nexus_runtime.dashboards.gateway import gateway

__all__ = ["DASHBOARDS", "DEFAULT_DIR", "REGENERATE", "render_all", "stale", "write_all"]

DASHBOARDS: dict[str, Callable[[], Board]] = {
    "fleet.json": fleet,
    "decisions.json": decisions,
    "budgets.json": budgets,
    "audit.json": audit,
    "gateway.json": gateway,
}
"""Each committed file and the code that renders it."""
DEFAULT_DIR = Path("deploy") / "grafana"
"""Where the JSON is committed, relative to the repository's root."""
REGENERATE = "python -m nexus_runtime.dashboards"


def render_all() -> dict[str, str]:
    """Each file name and its JSON, rendered afresh."""
    return {name: build().render() for name, build in DASHBOARDS.items()}


def write_all(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Why ``directory`` does not hold exactly what this code renders (empty: up to date)."""
    problems = []
    rendered = render_all()
    for name, text in rendered.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from what {REGENERATE} renders")
    for path in sorted(directory.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"{path}: no dashboard renders it")
    return problems
