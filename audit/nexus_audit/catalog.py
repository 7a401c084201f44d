"""Control catalogs and the crosswalks between them.

Audit records and Rego METADATA name the controls they evidence by qualified
id, ``<framework>:<id>``: ``SOC2:CC6.1``, ``ISO27001:A.5.15``, ``GDPR:Art.17``,
``HIPAA:164.312(b)``, ``PCI:10.2.1``, ``EUAIACT:Art.12``, ``ISO42001:A.6.2.8``.
The catalogs are YAML files in the repository's ``compliance-mappings/``, one
per framework; `FRAMEWORKS` says, for each, its file, the form of its ids, the
name of the field that groups its controls and, where the catalog is
complete, how many controls it has. Adding a framework is a YAML file and one
`FrameworkSpec`.

A crosswalk is a ``crosswalk-*.yaml`` file relating the controls of one
framework (its ``source``) to those of others (its ``targets``); every
relation is read in both directions.

`load_catalogs` is the only way to a `Catalogs`, and it validates everything
first, so a `Catalogs` in hand holds, per framework, unique ids of its form,
each with a title and a group (the right one where the id decides it), and
crosswalks whose every side names a catalogued control. Every problem
raises `CatalogError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from nexus_audit.metadata import MetadataError, rego_annotations, rego_modules
from nexus_contract.errors import NexusError

__all__ = [
    "CATALOG_DIR_NAME",
    "CROSSWALK_GLOB",
    "FRAMEWORKS",
    "CatalogError",
    "Catalogs",
    "Control",
    "ControlUse",
    "Framework",
    "FrameworkSpec",
    "UnknownControlError",
    "controls_in_rego",
    "default_catalog_dir",
    "framework_spec",
    "load_catalogs",
    "unknown_controls_in_rego",
]

CATALOG_DIR_NAME = "compliance-mappings"
CROSSWALK_GLOB = "crosswalk-*.yaml"


@dataclass(frozen=True)
class FrameworkSpec:
    """What the loader needs to know of one framework beyond its YAML file.

    ``groups`` maps an id prefix to the only group an id with that prefix may
    be in (the longest matching prefix wins); ``count`` is the exact number of
    controls of a catalog that lists the whole framework, None for a selection.
    """

    key: str
    file: str
    id_pattern: re.Pattern[str]
    id_kind: str
    id_example: str
    group_field: str
    count: int | None = None
    groups: Mapping[str, str] | None = None

    @property
    def cli_name(self) -> str:
        """The name commands take: ``soc2``, ``hipaa``, ``euaiact``."""
        return self.key.lower()

    def expected_group(self, control_id: str) -> str | None:
        if self.groups is None:
            return None
        prefixes = [p for p in self.groups if control_id.startswith(p)]
        return self.groups[max(prefixes, key=len)] if prefixes else None


_PCI_REQUIREMENTS = {
    "6.": "6: Develop and maintain secure systems and software",
    "7.": "7: Restrict access by business need to know",
    "8.": "8: Identify users and authenticate access",
    "10.": "10: Log and monitor all access to system components and cardholder data",
}

FRAMEWORKS: tuple[FrameworkSpec, ...] = (
    FrameworkSpec(
        key="SOC2",
        file="soc2-tsc-2017.yaml",
        id_pattern=re.compile(r"(CC[1-9]|A1|C1|PI1|P[1-8])\.[1-9]"),
        id_kind="SOC 2 criterion",
        id_example="CC6.1",
        group_field="category",
        count=61,
    ),
    FrameworkSpec(
        key="ISO27001",
        file="iso27001-2022-annex-a.yaml",
        id_pattern=re.compile(r"A\.[5-8]\.[1-9][0-9]?"),
        id_kind="ISO 27001 Annex A control",
        id_example="A.5.15",
        group_field="theme",
        count=93,
        groups={
            "A.5.": "Organizational",
            "A.6.": "People",
            "A.7.": "Physical",
            "A.8.": "Technological",
        },
    ),
    FrameworkSpec(
        key="GDPR",
        file="gdpr.yaml",
        id_pattern=re.compile(r"Art\.[1-9][0-9]?"),
        id_kind="GDPR article",
        id_example="Art.17",
        group_field="chapter",
    ),
    FrameworkSpec(
        key="HIPAA",
        file="hipaa-security-rule.yaml",
        id_pattern=re.compile(
            r"164\.3(?:08|12)\([a-z]\)(?:\([1-9][0-9]?\)(?:\((?:i|ii|iii|iv|v|vi|vii|viii)\)"
            r"(?:\([A-Z]\))?)?)?"
        ),
        id_kind="HIPAA Security Rule safeguard",
        id_example="164.312(a)(2)(i)",
        group_field="safeguard",
        groups={"164.308(": "Administrative", "164.312(": "Technical"},
    ),
    FrameworkSpec(
        key="PCI",
        file="pci-dss-4.0.1.yaml",
        id_pattern=re.compile(r"(?:[1-9]|1[0-2])\.[1-9][0-9]?\.[1-9][0-9]?(?:\.[1-9][0-9]?)?"),
        id_kind="PCI DSS requirement",
        id_example="10.2.1",
        group_field="requirement",
        groups=_PCI_REQUIREMENTS,
    ),
    FrameworkSpec(
        key="EUAIACT",
        file="eu-ai-act.yaml",
        id_pattern=re.compile(r"Art\.[1-9][0-9]{0,2}"),
        id_kind="EU AI Act article",
        id_example="Art.12",
        group_field="chapter",
    ),
    FrameworkSpec(
        key="ISO42001",
        file="iso42001-2023-annex-a.yaml",
        id_pattern=re.compile(r"A\.(?:[2-9]|10)\.[1-9](?:\.[1-9])?"),
        id_kind="ISO/IEC 42001 Annex A control",
        id_example="A.6.2.8",
        group_field="objective",
        count=38,
        groups={
            "A.2.": "AI policies",
            "A.3.": "Internal organisation",
            "A.4.": "Resources for AI systems",
            "A.5.": "Impact assessment",
            "A.6.": "AI system life cycle",
            "A.7.": "Data for AI systems",
            "A.8.": "Information for interested parties",
            "A.9.": "Use of AI systems",
            "A.10.": "Third-party and customer relationships",
        },
    ),
)
"""Every framework the catalogs hold, in the order reports list them."""

_SPECS = {spec.key: spec for spec in FRAMEWORKS}

# A qualified id anywhere in Rego source: an upper-case framework key, a colon,
# then the characters any framework's ids use.
_REGO_CONTROL_REFERENCE = re.compile(r"\b[A-Z][A-Z0-9]{1,15}:[A-Za-z0-9.()]+")


def framework_spec(key: str) -> FrameworkSpec:
    """The spec of the framework whose qualified-id prefix is ``key``; KeyError if none."""
    return _SPECS[key]


class CatalogError(Exception):
    """A catalog file is missing, unreadable, malformed or inconsistent.

    ``path`` is the file; ``line`` (1-based) is where the problem is, or None
    when it concerns the whole file.
    """

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class UnknownControlError(NexusError, LookupError):
    """A qualified control id names no catalogued control (or no known framework)."""

    def __init__(self, qualified_id: str, reason: str) -> None:
        self.qualified_id = qualified_id
        super().__init__(f"unknown control {qualified_id!r}: {reason}")


# --- the file formats ---------------------------------------------------------


def _one_line(value: str) -> str:
    if not value or value != value.strip() or "\n" in value:
        raise ValueError("must be one non-empty line with no leading or trailing spaces")
    return value


def _id_of_form(spec: FrameworkSpec) -> AfterValidator:
    def check(value: str) -> str:
        if not spec.id_pattern.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a {spec.id_kind} id; expected the form {spec.id_example!r}"
            )
        return value

    return AfterValidator(check)


def _framework_key(value: str) -> str:
    if value not in _SPECS:
        known = ", ".join(_SPECS)
        raise ValueError(f"{value!r} is not a framework key; expected one of {known}")
    return value


_Line = Annotated[str, AfterValidator(_one_line)]
_FrameworkKey = Annotated[str, AfterValidator(_framework_key)]


class _FileModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _CatalogHeader(_FileModel):
    framework: _Line
    name: _Line
    edition: _Line
    controls: list[Any] = Field(min_length=1)


class _CrosswalkHeader(_FileModel):
    source: _FrameworkKey
    targets: list[_FrameworkKey] = Field(min_length=1)
    mappings: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_frameworks(self) -> _CrosswalkHeader:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("targets lists a framework twice")
        if self.source in self.targets:
            raise ValueError(f"{self.source} is the source; a crosswalk relates it to others")
        return self


def _control_model(spec: FrameworkSpec) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "id": (Annotated[str, _id_of_form(spec)], ...),
        spec.group_field: (_Line, ...),
        "title": (_Line, ...),
    }
    return create_model(f"{spec.key}Control", __base__=_FileModel, **fields)


def _mapping_model(source: FrameworkSpec, targets: list[FrameworkSpec]) -> type[BaseModel]:
    fields: dict[str, Any] = {source.cli_name: (Annotated[str, _id_of_form(source)], ...)}
    for target in targets:
        ids = list[Annotated[str, _id_of_form(target)]]
        fields[target.cli_name] = (ids | None, Field(default=None, min_length=1))
    return create_model(f"{source.key}Mapping", __base__=_FileModel, **fields)


# --- what callers get --------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """One catalogued control. ``group`` is its SOC 2 category, ISO theme, GDPR chapter…"""

    framework: str
    id: str
    group: str
    title: str

    @property
    def qualified_id(self) -> str:
        return f"{self.framework}:{self.id}"


@dataclass(frozen=True, eq=False)
class Framework:
    """One catalog. ``key`` is the prefix of its qualified ids; ``controls`` keep file order."""

    key: str
    name: str
    edition: str
    source: Path
    controls: Mapping[str, Control]


@dataclass(frozen=True)
class ControlUse:
    """A control id written at ``path``:``line`` (as found, so possibly unknown)."""

    control_id: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.control_id}"


@dataclass(frozen=True, eq=False)
class Catalogs:
    """The validated catalogs; lookups take qualified ids and raise on unknown ones."""

    frameworks: Mapping[str, Framework]
    """Every framework by its qualified-id prefix, in the order of `FRAMEWORKS`."""
    _related: Mapping[str, frozenset[str]] = field(repr=False)

    def framework(self, key: str) -> Framework:
        """The framework whose qualified-id prefix is ``key``; KeyError if none."""
        return self.frameworks[key]

    def control(self, qualified_id: str) -> Control:
        prefix, colon, local_id = qualified_id.partition(":")
        framework = self.frameworks.get(prefix) if colon else None
        if framework is None:
            known = ", ".join(sorted(self.frameworks))
            raise UnknownControlError(
                qualified_id, f"expected '<framework>:<id>' with a framework among {known}"
            )
        control = framework.controls.get(local_id)
        if control is None:
            raise UnknownControlError(
                qualified_id, f"{framework.source.name} has no control {local_id!r}"
            )
        return control

    def is_known(self, qualified_id: str) -> bool:
        try:
            self.control(qualified_id)
        except UnknownControlError:
            return False
        return True

    def related(self, qualified_id: str) -> frozenset[str]:
        """Qualified ids any crosswalk relates to this control, in either direction.

        Empty for a known control no crosswalk covers (every GDPR article but
        those the EU AI Act crosswalk names).
        """
        self.control(qualified_id)
        return self._related.get(qualified_id, frozenset())


# --- loading -----------------------------------------------------------------


def default_catalog_dir() -> Path:
    """The repository's ``compliance-mappings/``: beside the checkout this module
    runs from, else in the working directory or the nearest parent that has one."""
    cwd = Path.cwd()
    for base in (Path(__file__).resolve().parents[2], cwd, *cwd.parents):
        candidate = base / CATALOG_DIR_NAME
        if candidate.is_dir():
            return candidate
    raise CatalogError(
        cwd, None, f"no {CATALOG_DIR_NAME}/ directory here or above; pass the directory explicitly"
    )


def load_catalogs(directory: Path | None = None) -> Catalogs:
    """Load and validate every catalog of `FRAMEWORKS` and every crosswalk in ``directory``.

    ``directory`` defaults to `default_catalog_dir()`. A YAML file there that
    is neither is refused too, so a new catalog cannot be silently ignored.
    Raises `CatalogError` on the first problem found.
    """
    directory = default_catalog_dir() if directory is None else directory
    frameworks = {
        spec.key: _framework(_Document.read(directory / spec.file), spec) for spec in FRAMEWORKS
    }
    known_files = {spec.file for spec in FRAMEWORKS}
    crosswalks = sorted(directory.glob(CROSSWALK_GLOB))
    for path in sorted(directory.glob("*.yaml")):
        if path.name not in known_files and path not in crosswalks:
            raise CatalogError(
                path,
                None,
                "neither a catalog of nexus_audit.catalog.FRAMEWORKS nor a crosswalk "
                f"({CROSSWALK_GLOB}); add a FrameworkSpec for it or rename it",
            )
    related: dict[str, set[str]] = {}
    for path in crosswalks:
        _crosswalk(_Document.read(path), frameworks, related)
    return Catalogs(
        frameworks=MappingProxyType(frameworks),
        _related=MappingProxyType({key: frozenset(ids) for key, ids in related.items()}),
    )


def _framework(doc: _Document, spec: FrameworkSpec) -> Framework:
    header = doc.validate(_CatalogHeader)
    if header.framework != spec.key:
        raise CatalogError(
            doc.path,
            doc.line("framework"),
            f"framework: this file is the {spec.key} catalog; found {header.framework!r}",
        )
    model = _control_model(spec)
    controls: dict[str, Control] = {}
    first_index: dict[str, int] = {}
    for index, item in enumerate(header.controls):
        entry = doc.validate(model, item, ("controls", index)).model_dump()
        control_id: str = entry["id"]
        group: str = entry[spec.group_field]
        if control_id in controls:
            first = doc.line("controls", first_index[control_id], "id")
            raise CatalogError(
                doc.path,
                doc.line("controls", index, "id"),
                f"duplicate control id {control_id!r} (first listed at line {first})",
            )
        expected = spec.expected_group(control_id)
        if spec.groups is not None and group != expected:
            raise CatalogError(
                doc.path,
                doc.line("controls", index, spec.group_field),
                f"{control_id} belongs to {spec.group_field} {expected!r}, not {group!r}",
            )
        first_index[control_id] = index
        controls[control_id] = Control(spec.key, control_id, group, entry["title"])
    if spec.count is not None and len(controls) != spec.count:
        raise CatalogError(
            doc.path,
            doc.line("controls"),
            f"{header.name} {header.edition} has exactly {spec.count} controls;"
            f" this file lists {len(controls)}",
        )
    return Framework(
        key=spec.key,
        name=header.name,
        edition=header.edition,
        source=doc.path,
        controls=MappingProxyType(controls),
    )


def _crosswalk(
    doc: _Document, frameworks: Mapping[str, Framework], related: dict[str, set[str]]
) -> None:
    header = doc.validate(_CrosswalkHeader)
    source = _SPECS[header.source]
    targets = [_SPECS[key] for key in header.targets]
    model = _mapping_model(source, targets)
    first_index: dict[str, int] = {}
    for index, item in enumerate(header.mappings):
        entry = doc.validate(model, item, ("mappings", index)).model_dump()
        local: str = entry[source.cli_name]
        here = doc.line("mappings", index, source.cli_name)
        if local in first_index:
            first = doc.line("mappings", first_index[local], source.cli_name)
            raise CatalogError(
                doc.path, here, f"{local} is mapped twice (first at line {first}); merge them"
            )
        first_index[local] = index
        source_id = f"{source.key}:{local}"
        if local not in frameworks[source.key].controls:
            raise CatalogError(
                doc.path, here, f"{source_id} is not in {frameworks[source.key].source.name}"
            )
        named = [t for t in targets if entry[t.cli_name] is not None]
        if not named:
            raise CatalogError(
                doc.path,
                here,
                f"{source_id} relates to no control; name at least one of "
                + ", ".join(t.cli_name for t in targets),
            )
        for target in named:
            seen: set[str] = set()
            for position, target_local in enumerate(entry[target.cli_name]):
                target_here = doc.line("mappings", index, target.cli_name, position)
                target_id = f"{target.key}:{target_local}"
                if target_local not in frameworks[target.key].controls:
                    raise CatalogError(
                        doc.path,
                        target_here,
                        f"{target_id} is not in {frameworks[target.key].source.name}",
                    )
                if target_id in seen:
                    raise CatalogError(
                        doc.path, target_here, f"{target_id} is listed twice for {source_id}"
                    )
                seen.add(target_id)
                related.setdefault(source_id, set()).add(target_id)
                related.setdefault(target_id, set()).add(source_id)


_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class _Document:
    """One YAML file: its node tree (for line numbers) and its plain data."""

    path: Path
    root: yaml.Node
    data: Any

    @classmethod
    def read(cls, path: Path) -> _Document:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(path, None, "catalog file is missing") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(path, None, f"cannot read catalog file: {exc}") from exc
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise CatalogError(path, line, f"invalid YAML: {exc.problem or exc}") from exc
        except yaml.YAMLError as exc:
            raise CatalogError(path, None, f"invalid YAML: {exc}") from exc
        if root is None:
            raise CatalogError(path, None, "the file holds no YAML document")
        data = _PlainBuilder(path).build(root)
        if not isinstance(data, dict):
            raise CatalogError(path, root.start_mark.line + 1, "the document must be a mapping")
        return cls(path, root, data)

    def validate(
        self, model: type[_Model], data: Any = None, at: tuple[str | int, ...] = ()
    ) -> _Model:
        """``data`` (the whole document by default) as ``model``; ``at`` is where
        ``data`` sits in the document, for the line of a problem."""
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            loc = (*at, *first["loc"])
            more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
            raise CatalogError(self.path, self.line(*loc), _describe(loc, first) + more) from None

    def line(self, *loc: str | int) -> int:
        """1-based line of the value at ``loc``, or of its nearest ancestor that exists.

        A mapping value is placed at its key, which is where a block collection's
        key sits and where an unknown key is reported.
        """
        node = self.root
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                        node, line = value_node, key_node.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _describe(loc: tuple[str | int, ...], error: Any) -> str:
    where = ".".join(str(part) for part in loc) or "document"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "string_type" and isinstance(error.get("input"), int | float | bool):
        message += " (put the value in quotes)"
    return f"{where}: {message}"


class _PlainBuilder:
    """Builds plain data from a node tree, refusing duplicate mapping keys
    (which PyYAML would silently resolve to the last value)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    raise CatalogError(self._path, line, f"mapping keys must be strings: {key!r}")
                if key in out:
                    raise CatalogError(self._path, line, f"duplicate key {key!r}")
                out[key] = self.build(value_node)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item) for item in node.value]
        return self._constructor.construct_object(node, deep=True)


# --- control ids used in the Rego library ------------------------------------


def controls_in_rego(rego_dir: Path) -> dict[str, list[tuple[Path, int]]]:
    """Every control id written in the non-test ``.rego`` files under ``rego_dir``,
    with the file and 1-based line of each use, files in sorted order.

    Two kinds of use count: every item of a METADATA block's ``labels.controls``
    (whatever its form, so a misspelt framework is caught too) and anything of
    the form ``<FRAMEWORK>:<id>`` elsewhere in the source (string literals, prose).
    Raises `CatalogError` for a METADATA block that is not YAML.
    """
    places: dict[str, set[tuple[Path, int]]] = {}
    try:
        annotations = rego_annotations(rego_dir)
    except MetadataError as exc:
        raise CatalogError(exc.path, exc.line, str(exc).split(": ", 1)[1]) from exc
    for annotation in annotations:
        for control_id, line in annotation.controls:
            places.setdefault(control_id, set()).add((annotation.path, line))
    for path in rego_modules(rego_dir):
        text = path.read_text(encoding="utf-8")
        for number, line_text in enumerate(text.splitlines(), start=1):
            for match in _REGO_CONTROL_REFERENCE.finditer(line_text):
                places.setdefault(_trim_reference(match.group()), set()).add((path, number))
    return {control_id: sorted(uses) for control_id, uses in places.items()}


def unknown_controls_in_rego(catalogs: Catalogs, rego_dir: Path) -> list[ControlUse]:
    """Every use in `controls_in_rego` of an id the catalogs do not know, by file and line."""
    unknown = [
        ControlUse(control_id, path, line)
        for control_id, places in controls_in_rego(rego_dir).items()
        if not catalogs.is_known(control_id)
        for path, line in places
    ]
    return sorted(unknown, key=lambda use: (use.path, use.line, use.control_id))


def _trim_reference(reference: str) -> str:
    """Drop what prose glued onto an id: a full stop, an unbalanced closing parenthesis."""
    while True:
        trimmed = reference.rstrip(".")
        if trimmed.endswith(")") and trimmed.count(")") > trimmed.count("("):
            trimmed = trimmed[:-1]
        if trimmed == reference:
            return trimmed
        reference = trimmed
