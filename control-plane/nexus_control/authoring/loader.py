"""Loads a bundle directory's YAML specs, keeping the position of every value.

Every problem found while loading, and later while cross-checking, is a
:class:`Problem` naming file, line and column (1-based), so an author can
jump straight to it. Loading never stops at the first problem: it returns all
of them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nexus_contract.errors import NexusError
from nexus_control.authoring.spec import API_VERSION, SPEC_KINDS, AnySpec, BundleSpec

__all__ = [
    "BUNDLE_FILE",
    "MAX_SPEC_BYTES",
    "BundleSources",
    "PathKey",
    "Problem",
    "SpecDocument",
    "SpecError",
    "load_bundle",
    "load_document",
]

BUNDLE_FILE = "bundle.yaml"
MAX_SPEC_BYTES = 8 * 1024 * 1024

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the specs, at a place in a file."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, str | int]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


class SpecError(NexusError):
    """The specs have problems; ``problems`` lists every one, sorted by place."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class SpecDocument:
    """One validated YAML document and the positions of its values."""

    path: Path
    display: str
    spec: AnySpec | Any
    positions: dict[PathKey, tuple[int, int]] = field(repr=False)

    def at(self, *key: str | int) -> tuple[str, int, int]:
        """File, line and column of the value at ``key``, or of its nearest parent."""
        probe: PathKey = tuple(key)
        while probe not in self.positions and probe:
            probe = probe[:-1]
        line, column = self.positions.get(probe, (1, 1))
        return self.display, line, column

    def problem(self, message: str, *key: str | int) -> Problem:
        file, line, column = self.at(*key)
        return Problem(file, line, column, message)


@dataclass(frozen=True)
class BundleSources:
    """A bundle directory: its ``bundle.yaml`` and every other spec document."""

    root: Path
    bundle: SpecDocument
    documents: tuple[SpecDocument, ...]
    policy_override: Path | None = None
    """Where the Rego library is when not where ``bundle.yaml`` says (unpacked sources)."""

    @property
    def name(self) -> str:
        spec = self.bundle.spec
        assert isinstance(spec, BundleSpec)
        return spec.name

    @property
    def policy_dir(self) -> Path:
        if self.policy_override is not None:
            return self.policy_override.resolve()
        spec = self.bundle.spec
        assert isinstance(spec, BundleSpec)
        return (self.root / spec.policy).resolve()

    def of_kind(self, kind: type[Any]) -> Iterator[tuple[SpecDocument, Any]]:
        for doc in self.documents:
            if isinstance(doc.spec, kind):
                yield doc, doc.spec


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it: composing is the slow part of big specs."""


def load_bundle(
    root: Path, overlays: Sequence[Path] = (), *, policy_dir: Path | None = None
) -> BundleSources:
    """Load and validate every spec in ``root``; raise SpecError listing all problems.

    ``overlays`` are further directories whose spec files join the bundle's
    (per-environment credentials, say); they may not hold a Bundle document.
    ``policy_dir`` replaces the library directory ``bundle.yaml`` names.
    """
    root = root.resolve() if root.exists() else root
    problems: list[Problem] = []
    if not root.is_dir():
        raise SpecError([Problem(str(root), 1, 1, "bundle directory does not exist")])
    files = _spec_files(root)
    for overlay in overlays:
        if not overlay.is_dir():
            problems.append(Problem(str(overlay), 1, 1, "overlay directory does not exist"))
            continue
        files += _spec_files(overlay)
    bundle_path = root / BUNDLE_FILE
    if bundle_path not in files:
        problems.append(
            Problem(_display(bundle_path), 1, 1, f"missing {BUNDLE_FILE}: every bundle needs one")
        )

    bundle_doc: SpecDocument | None = None
    documents: list[SpecDocument] = []
    for path in files:
        doc = _load_document(path, problems)
        if doc is None:
            continue
        if isinstance(doc.spec, BundleSpec):
            if path != bundle_path:
                problems.append(doc.problem(f"kind Bundle belongs in {BUNDLE_FILE}", "kind"))
            else:
                bundle_doc = doc
        elif path == bundle_path:
            problems.append(doc.problem(f"{BUNDLE_FILE} must have kind Bundle", "kind"))
        else:
            documents.append(doc)

    if bundle_doc is not None:
        sources = BundleSources(
            root=root, bundle=bundle_doc, documents=tuple(documents), policy_override=policy_dir
        )
        if not sources.policy_dir.is_dir():
            problems.append(
                bundle_doc.problem(
                    f"policy directory {sources.policy_dir} does not exist", "policy"
                )
            )
    if problems:
        raise SpecError(problems)
    assert bundle_doc is not None
    return BundleSources(
        root=root, bundle=bundle_doc, documents=tuple(documents), policy_override=policy_dir
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a big spec becomes objects.

    Building a 10k-tenant spec allocates millions of nodes and values that all
    survive; the collector would traverse them again and again for nothing
    (measured: 4.7 s with it, 1.6 s without, at 10k tenants).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _spec_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_document(path: Path, kinds: dict[str, type[Any]]) -> SpecDocument:
    """Load one spec file of one of ``kinds``; raise SpecError with every problem."""
    problems: list[Problem] = []
    doc = _load_document(path, problems, kinds)
    if problems or doc is None:
        raise SpecError(problems or [Problem(_display(path), 1, 1, "cannot load")])
    return doc


def _load_document(
    path: Path, problems: list[Problem], kinds: dict[str, type[Any]] | None = None
) -> SpecDocument | None:
    kinds = SPEC_KINDS if kinds is None else kinds
    display = _display(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            problems.append(Problem(display, 1, 1, f"file is {size} bytes; the limit is 8 MiB"))
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(display, 1, 1, f"cannot read file: {exc}"))
        return None

    try:
        with _gc_paused():
            nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(display, line, column, f"invalid YAML: {exc.problem or exc}"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(display, 1, 1, f"invalid YAML: {exc}"))
        return None

    if len(nodes) != 1 or nodes[0] is None:
        problems.append(Problem(display, 1, 1, "a spec file holds exactly one YAML document"))
        return None

    positions: dict[PathKey, tuple[int, int]] = {}
    local: list[Problem] = []
    builder = _Builder(display, positions, local)
    with _gc_paused():
        data = builder.build(nodes[0], ())
    if local:
        problems.extend(local)
        return None
    if not isinstance(data, dict):
        problems.append(Problem(display, 1, 1, "a spec document must be a mapping"))
        return None

    def where(*key: str | int) -> tuple[int, int]:
        probe: PathKey = tuple(key)
        while probe not in positions and probe:
            probe = probe[:-1]
        return positions.get(probe, (1, 1))

    version = data.get("apiVersion")
    if version != API_VERSION:
        line, col = where("apiVersion")
        problems.append(
            Problem(display, line, col, f"apiVersion must be {API_VERSION!r}, got {version!r}")
        )
        return None
    kind = data.get("kind")
    model = kinds.get(kind) if isinstance(kind, str) else None
    if model is None:
        line, col = where("kind")
        known = ", ".join(sorted(kinds))
        problems.append(
            Problem(display, line, col, f"unknown kind {kind!r}; expected one of {known}")
        )
        return None

    try:
        with _gc_paused():
            spec = model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            line, col = where(*loc)
            if err["type"] == "extra_forbidden" and loc in builder.key_positions:
                line, col = builder.key_positions[loc]
            problems.append(Problem(display, line, col, _describe(err, loc)))
        return None
    return SpecDocument(path=path, display=display, spec=spec, positions=positions)


def _describe(err: Any, loc: PathKey) -> str:
    field_path = ".".join(str(part) for part in loc) or "document"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{field_path}: unknown key"
    if kind == "missing":
        return f"{field_path}: required key is missing"
    message = str(err["msg"])
    if kind == "string_type" and isinstance(err.get("input"), int | float | bool):
        message += " (put the value in quotes)"
    return f"{field_path}: {message}"


class _Builder:
    """Builds plain data from a node tree, recording where each value starts.

    Duplicate mapping keys are problems (PyYAML would silently keep the last).
    """

    def __init__(
        self, display: str, positions: dict[PathKey, tuple[int, int]], problems: list[Problem]
    ) -> None:
        self._display = display
        self._positions = positions
        self._problems = problems
        self._constructor = yaml.constructor.SafeConstructor()
        self.key_positions: dict[PathKey, tuple[int, int]] = {}

    def build(self, node: yaml.Node, key: PathKey) -> Any:
        self._positions[key] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, key)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*key, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, key: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            name = self._constructor.construct_object(key_node, deep=True)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(name, str):
                self._problem(where, f"mapping keys must be strings, got {name!r}")
                continue
            if name in out:
                self._problem(where, f"duplicate key {name!r}")
                continue
            out[name] = self.build(value_node, (*key, name))
            self.key_positions[(*key, name)] = where
            if not isinstance(value_node, yaml.ScalarNode):
                # A block collection starts on the next line; its key is the better place.
                self._positions[(*key, name)] = where
        return out

    def _problem(self, where: tuple[int, int], message: str) -> None:
        self._problems.append(Problem(self._display, where[0], where[1], message))
