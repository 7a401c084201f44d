"""Every event type the product records is evidence for at least one control.

The types are read from the code itself: each ``outbox.record(session, TYPE, ...)`` call
and each event the audit service appends, where TYPE is a literal, a module constant, an
f-string's fixed prefix or either branch of a conditional. An event type with no control
would be a leaf no compliance export ever cites: a hole in the evidence, found here
rather than by an auditor.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nexus_audit.events import controls_for
from tests.conftest import REPO

SOURCES = (REPO / "control-plane" / "nexus_control", REPO / "audit" / "nexus_audit")


def _constants(trees: list[ast.Module]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(value, str):
                        found.setdefault(target.id, set()).add(value)
    return found


def _types(node: ast.expr, constants: dict[str, set[str]]) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Name):
        yield from (v for v in constants.get(node.id, ()) if "." in v)
    elif isinstance(node, ast.IfExp):
        yield from _types(node.body, constants)
        yield from _types(node.orelse, constants)
    elif isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
        yield f"{node.values[0].value}*"
    else:
        raise AssertionError(f"an event type this test cannot read: {ast.unparse(node)}")


def recorded_event_types() -> dict[str, str]:
    """Event type → where it is recorded: ``outbox.record(session, TYPE, ...)``, any call's
    ``event_type=TYPE``, and the audit service's ``*_EVENT`` constants."""
    files = [f for root in SOURCES for f in sorted(root.rglob("*.py"))]
    trees = [ast.parse(f.read_text(), str(f)) for f in files]
    constants = _constants(trees)
    found: dict[str, str] = {}
    for path, tree in zip(files, trees, strict=True):
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                named = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(n == "EVENT" or n.endswith("_EVENT") for n in named):
                    found.setdefault(str(node.value.value), f"{where}:{node.lineno}")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "record"
                and isinstance(func.value, ast.Name)
                and func.value.id == "outbox"
                and len(node.args) >= 2
            ):
                for event_type in _types(node.args[1], constants):
                    found.setdefault(event_type, f"{where}:{node.lineno}")
            for keyword in node.keywords:
                if keyword.arg == "event_type" and not isinstance(keyword.value, ast.Attribute):
                    for event_type in _types(keyword.value, constants):
                        found.setdefault(event_type, f"{where}:{node.lineno}")
    return found


def test_every_recorded_event_type_names_a_control() -> None:
    found = recorded_event_types()
    assert len(found) > 25, found  # the scan finds the product's events, not nothing
    for required in (
        "console.signed_in",
        "key.retired",
        "shadow.gate_verdict",
        "gdpr.erasure_requested",
        "retention.purged",
    ):
        assert required in found, required
    missing = {
        event_type: where
        for event_type, where in found.items()
        if not controls_for(event_type.rstrip("*") + ("x" if event_type.endswith("*") else ""))
    }
    assert missing == {}, missing
