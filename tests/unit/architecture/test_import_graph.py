"""The import graph is a DAG with one composition root, and HTTP stays at the edges.

Every ``import`` in the product packages is read with ``ast`` (inside
functions too: a lazy import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = {
    "nexus_cli": REPO / "cli" / "nexus_cli",
    "nexus_control": REPO / "control-plane" / "nexus_control",
    "nexus_dataplane": REPO / "data-plane" / "nexus_dataplane",
    "nexus_audit": REPO / "audit" / "nexus_audit",
    "nexus_contract": REPO / "contract" / "nexus_contract",
    "nexus_runtime": REPO / "runtime" / "nexus_runtime",
}
LEAVES = {"nexus_contract", "nexus_runtime"}
ALLOWED: dict[str, set[str]] = {
    "nexus_cli": set(PACKAGES) - {"nexus_cli"},
    "nexus_control": {"nexus_audit", *LEAVES},
    "nexus_audit": set(LEAVES),
    "nexus_dataplane": set(LEAVES),
    "nexus_runtime": {"nexus_contract"},
    "nexus_contract": set(),
}
"""cli → {control, dataplane, audit}; control → audit; dataplane → nothing of ours.
The two leaves hold the wire contract and the service runtime every package shares."""

HTTP_MODULES = ("fastapi", "starlette", "uvicorn")
HTTP_HOMES = (
    "nexus_control.api",
    "nexus_audit.api",
    "nexus_control.console.routes",
    "nexus_runtime.http",
    "nexus_runtime.server",
)
"""Only routers (and the runtime that serves them) know HTTP frameworks."""

AUTHORING_MAY_USE = ("nexus_control.authoring", "nexus_control.access.signing_keys")
"""Authoring (specs → signed bundle) runs in CI and on laptops: no database, no service."""


def _module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _modules() -> Iterator[tuple[str, str, Path]]:
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            yield package, _module_name(package, path), path


def test_packages_import_each_other_only_along_the_dag() -> None:
    wrong = []
    for package, _, path in _modules():
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {package} imports {imported}")
    assert not wrong, "forbidden imports:\n" + "\n".join(wrong)


def test_only_routers_and_the_runtime_import_http_frameworks() -> None:
    wrong = []
    for _, module, path in _modules():
        if module.startswith(HTTP_HOMES):
            continue
        for line, imported in _imports(path):
            if imported.split(".")[0] in HTTP_MODULES:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module} imports {imported}")
    assert not wrong, "HTTP outside the routers:\n" + "\n".join(wrong)


def test_authoring_needs_no_database_and_no_service() -> None:
    wrong = []
    for _, module, path in _modules():
        if not module.startswith("nexus_control.authoring"):
            continue
        for line, imported in _imports(path):
            if imported.startswith("nexus_control") and not imported.startswith(AUTHORING_MAY_USE):
                if imported == "nexus_control.__version__" or imported == "nexus_control":
                    continue
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module} imports {imported}")
            if imported.split(".")[0] in ("sqlalchemy", "alembic"):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module} imports {imported}")
    assert not wrong, "authoring reaches into the service:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_module_declares_its_public_surface(package: str) -> None:
    missing = [
        str(path.relative_to(REPO))
        for _, module, path in _modules()
        if module.startswith(package)
        and path.name not in ("__init__.py", "__main__.py", "env.py")
        and "migrations" not in path.parts
        and "__all__" not in path.read_text(encoding="utf-8")
    ]
    assert not missing, "modules without __all__:\n" + "\n".join(missing)
