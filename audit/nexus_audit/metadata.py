"""Rego METADATA annotations as written in the library's source, with their lines.

OPA reads a ``# METADATA`` comment block as YAML and attaches it to the
statement that follows: the package (package scope) or a rule (rule scope,
unless ``scope:`` says otherwise). Decisions carry the ``labels.controls``
of the rules they evaluated (``rule_labels``) and deny reasons carry their
own rule's, so these blocks are where the project says which controls each
rule evidences. This module reads them without OPA, keeping the 1-based
line of every control id so that a wrong one is reported where it is
written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MetadataError", "RegoAnnotation", "rego_annotations", "rego_modules"]

_METADATA_MARKER = "# METADATA"
_PACKAGE = re.compile(r"package\s+([A-Za-z_][A-Za-z0-9_.]*)")
_RULE_NAME = re.compile(r"(?:default\s+)?([A-Za-z_][A-Za-z0-9_]*)")


class MetadataError(ValueError):
    """A METADATA block is not YAML, or not a mapping; names the file and line."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {problem}")


@dataclass(frozen=True)
class RegoAnnotation:
    """One METADATA block and the statement it annotates.

    ``rule`` is the annotated rule's name (``deny``), None for a package
    annotation; ``rule_id`` is ``custom.id`` when the block gives one.
    ``controls`` are the ``labels.controls`` items as written (each with its
    line), so an item may be an id no catalog knows, or not even a string.
    """

    path: Path
    line: int
    package: str
    scope: str
    rule: str | None
    rule_id: str | None
    title: str | None
    description: str | None
    controls: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        """A stable name for what this block annotates: ``custom.id``, else its path."""
        if self.rule_id is not None:
            return self.rule_id
        return self.package if self.rule is None else f"{self.package}.{self.rule}"


def rego_modules(rego_dir: Path) -> list[Path]:
    """The non-test ``.rego`` files under ``rego_dir``, in sorted order."""
    if not rego_dir.is_dir():
        raise NotADirectoryError(f"{rego_dir}: not a directory of Rego modules")
    return [p for p in sorted(rego_dir.rglob("*.rego")) if not p.name.endswith("_test.rego")]


def rego_annotations(rego_dir: Path) -> list[RegoAnnotation]:
    """Every METADATA block of the non-test modules under ``rego_dir``, in file order."""
    found: list[RegoAnnotation] = []
    for path in rego_modules(rego_dir):
        found.extend(_module_annotations(path, path.read_text(encoding="utf-8").splitlines()))
    return found


def _module_annotations(path: Path, lines: list[str]) -> Iterator[RegoAnnotation]:
    package = next(
        (m.group(1) for line in lines if (m := _PACKAGE.match(line)) is not None), "<no package>"
    )
    index = 0
    while index < len(lines):
        if lines[index].rstrip() != _METADATA_MARKER:
            index += 1
            continue
        marker = index
        index += 1
        while index < len(lines) and lines[index].startswith("#"):
            index += 1
        block = [_uncomment(line) for line in lines[marker + 1 : index]]
        statement = next((line for line in lines[index:] if line.strip()), "")
        yield _annotation(path, marker + 1, block, statement, package)


def _uncomment(line: str) -> str:
    text = line[1:]
    return text[1:] if text.startswith(" ") else text


def _annotation(
    path: Path, marker_line: int, block: list[str], statement: str, package: str
) -> RegoAnnotation:
    first_line = marker_line + 1
    try:
        root = yaml.compose("\n".join(block), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + mark.line if mark is not None else marker_line
        raise MetadataError(path, line, f"METADATA is not YAML: {exc.problem or exc}") from exc
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(root, yaml.MappingNode):
        raise MetadataError(path, marker_line, "METADATA must be a YAML mapping")
    data: Any = yaml.safe_load("\n".join(block)) or {}

    is_package = _PACKAGE.match(statement) is not None
    rule_match = None if is_package else _RULE_NAME.match(statement)
    scope = data.get("scope")
    custom = data.get("custom")
    return RegoAnnotation(
        path=path,
        line=marker_line,
        package=package,
        scope=scope if isinstance(scope, str) else ("package" if is_package else "rule"),
        rule=rule_match.group(1) if rule_match is not None else None,
        rule_id=_text(custom.get("id")) if isinstance(custom, dict) else None,
        title=_text(data.get("title")),
        description=_text(data.get("description")),
        controls=tuple(
            (str(node.value), first_line + node.start_mark.line) for node in _control_nodes(root)
        ),
    )


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) else None


def _control_nodes(root: yaml.MappingNode) -> list[yaml.Node]:
    labels = _value(root, "labels")
    controls = _value(labels, "controls") if isinstance(labels, yaml.MappingNode) else None
    if isinstance(controls, yaml.SequenceNode):
        return list(controls.value)
    if isinstance(controls, yaml.ScalarNode):
        return [controls]
    return []


def _value(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            node: yaml.Node = value_node
            return node
    return None
