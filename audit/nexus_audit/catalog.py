"""Control catalogs: SOC 2 TSC, ISO/IEC 27001:2022 Annex A, GDPR articles, and a crosswalk.

Audit records and Rego METADATA name the controls they evidence by qualified
id, ``<framework>:<id>``: ``SOC2:CC6.1``, ``ISO27001:A.5.15``, ``GDPR:Art.17``.
The catalogs are YAML files in the repository's ``compliance-mappings/``.

`load_catalogs` is the only way to a `Catalogs`, and it validates everything
first, so a `Catalogs` in hand always holds exactly 61 SOC 2 criteria and 93
Annex A controls, every id unique and of its framework's form, and a crosswalk
whose both sides name catalogued controls. Every problem raises `CatalogError`
naming the file and, where there is one, the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from nexus_contract.errors import NexusError

__all__ = [
    "CATALOG_DIR_NAME",
    "CROSSWALK_SOC2_ISO27001_FILE",
    "GDPR_FILE",
    "ISO27001_CONTROL_COUNT",
    "ISO27001_FILE",
    "SOC2_CRITERIA_COUNT",
    "SOC2_FILE",
    "CatalogError",
    "Catalogs",
    "Control",
    "ControlUse",
    "CrosswalkEntry",
    "Framework",
    "GdprArticle",
    "GdprCatalogFile",
    "Iso27001CatalogFile",
    "Iso27001Control",
    "Soc2CatalogFile",
    "Soc2Criterion",
    "Soc2Iso27001CrosswalkFile",
    "UnknownControlError",
    "controls_in_rego",
    "default_catalog_dir",
    "load_catalogs",
    "unknown_controls_in_rego",
]

CATALOG_DIR_NAME = "compliance-mappings"
SOC2_FILE = "soc2-tsc-2017.yaml"
ISO27001_FILE = "iso27001-2022-annex-a.yaml"
GDPR_FILE = "gdpr.yaml"
CROSSWALK_SOC2_ISO27001_FILE = "crosswalk-soc2-iso27001.yaml"

SOC2_CRITERIA_COUNT = 61
ISO27001_CONTROL_COUNT = 93

_SOC2_ID = re.compile(r"(CC[1-9]|A1|C1|PI1|P[1-8])\.[1-9]")
_ISO27001_ID = re.compile(r"A\.[5-8]\.[1-9][0-9]?")
_GDPR_ID = re.compile(r"Art\.[1-9][0-9]?")

_ISO27001_THEMES = {"5": "Organizational", "6": "People", "7": "Physical", "8": "Technological"}

_REGO_CONTROL_REFERENCE = re.compile(r"\b(SOC2|ISO27001|GDPR):[A-Za-z0-9.()]+")


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


# --- the file format ---------------------------------------------------------


def _one_line(value: str) -> str:
    if not value or value != value.strip() or "\n" in value:
        raise ValueError("must be one non-empty line with no leading or trailing spaces")
    return value


def _id_of_form(pattern: re.Pattern[str], framework: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a {framework} id; expected the form {example!r}")
        return value

    return AfterValidator(check)


_Line = Annotated[str, AfterValidator(_one_line)]
_Soc2Id = Annotated[str, _id_of_form(_SOC2_ID, "SOC 2 criterion", "CC6.1")]
_Iso27001Id = Annotated[str, _id_of_form(_ISO27001_ID, "ISO 27001 Annex A control", "A.5.15")]
_GdprId = Annotated[str, _id_of_form(_GDPR_ID, "GDPR article", "Art.17")]


class _FileModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Soc2Criterion(_FileModel):
    id: _Soc2Id
    category: _Line
    title: _Line


class Iso27001Control(_FileModel):
    id: _Iso27001Id
    theme: Literal["Organizational", "People", "Physical", "Technological"]
    title: _Line

    @model_validator(mode="after")
    def _theme_matches_clause(self) -> Iso27001Control:
        expected = _ISO27001_THEMES[self.id.split(".")[1]]
        if self.theme != expected:
            raise ValueError(f"{self.id} belongs to theme {expected!r}, not {self.theme!r}")
        return self


class GdprArticle(_FileModel):
    id: _GdprId
    chapter: _Line
    title: _Line


class Soc2CatalogFile(_FileModel):
    framework: Literal["SOC2"]
    name: _Line
    edition: _Line
    controls: list[Soc2Criterion]


class Iso27001CatalogFile(_FileModel):
    framework: Literal["ISO27001"]
    name: _Line
    edition: _Line
    controls: list[Iso27001Control]


class GdprCatalogFile(_FileModel):
    framework: Literal["GDPR"]
    name: _Line
    edition: _Line
    controls: list[GdprArticle] = Field(min_length=1)


class CrosswalkEntry(_FileModel):
    soc2: _Soc2Id
    iso27001: list[_Iso27001Id] = Field(min_length=1)


class Soc2Iso27001CrosswalkFile(_FileModel):
    mappings: list[CrosswalkEntry] = Field(min_length=1)


# --- what callers get --------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """One catalogued control. ``group`` is its SOC 2 category, ISO theme or GDPR chapter."""

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

    soc2: Framework
    iso27001: Framework
    gdpr: Framework
    _related: Mapping[str, frozenset[str]] = field(repr=False)
    _by_key: Mapping[str, Framework] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_key = {f.key: f for f in (self.soc2, self.iso27001, self.gdpr)}
        object.__setattr__(self, "_by_key", MappingProxyType(by_key))

    @property
    def frameworks(self) -> Mapping[str, Framework]:
        """Every framework by its qualified-id prefix: ``SOC2``, ``ISO27001``, ``GDPR``."""
        return self._by_key

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
        """Qualified ids the crosswalk relates to this control, in either direction.

        Empty for a known control the crosswalk does not cover (every GDPR article).
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
    """Load and validate every catalog and the crosswalk in ``directory``.

    ``directory`` defaults to `default_catalog_dir()`. Raises `CatalogError`
    on the first problem found.
    """
    directory = default_catalog_dir() if directory is None else directory

    soc2_doc = _Document.read(directory / SOC2_FILE)
    soc2_file = soc2_doc.validate(Soc2CatalogFile)
    soc2 = _framework(
        soc2_doc,
        soc2_file,
        ((c.id, c.category, c.title) for c in soc2_file.controls),
        SOC2_CRITERIA_COUNT,
    )

    iso_doc = _Document.read(directory / ISO27001_FILE)
    iso_file = iso_doc.validate(Iso27001CatalogFile)
    iso27001 = _framework(
        iso_doc,
        iso_file,
        ((c.id, c.theme, c.title) for c in iso_file.controls),
        ISO27001_CONTROL_COUNT,
    )

    gdpr_doc = _Document.read(directory / GDPR_FILE)
    gdpr_file = gdpr_doc.validate(GdprCatalogFile)
    gdpr = _framework(
        gdpr_doc, gdpr_file, ((c.id, c.chapter, c.title) for c in gdpr_file.controls), None
    )

    related = _crosswalk(_Document.read(directory / CROSSWALK_SOC2_ISO27001_FILE), soc2, iso27001)
    return Catalogs(soc2=soc2, iso27001=iso27001, gdpr=gdpr, _related=related)


_CatalogFile = Soc2CatalogFile | Iso27001CatalogFile | GdprCatalogFile


def _framework(
    doc: _Document,
    catalog: _CatalogFile,
    entries: Iterable[tuple[str, str, str]],
    expected_count: int | None,
) -> Framework:
    controls: dict[str, Control] = {}
    first_index: dict[str, int] = {}
    for index, (control_id, group, title) in enumerate(entries):
        if control_id in controls:
            first = doc.line("controls", first_index[control_id], "id")
            raise CatalogError(
                doc.path,
                doc.line("controls", index, "id"),
                f"duplicate control id {control_id!r} (first listed at line {first})",
            )
        first_index[control_id] = index
        controls[control_id] = Control(catalog.framework, control_id, group, title)
    if expected_count is not None and len(controls) != expected_count:
        raise CatalogError(
            doc.path,
            doc.line("controls"),
            f"{catalog.name} {catalog.edition} has exactly {expected_count} controls;"
            f" this file lists {len(controls)}",
        )
    return Framework(
        key=catalog.framework,
        name=catalog.name,
        edition=catalog.edition,
        source=doc.path,
        controls=MappingProxyType(controls),
    )


def _crosswalk(
    doc: _Document, soc2: Framework, iso27001: Framework
) -> Mapping[str, frozenset[str]]:
    crosswalk = doc.validate(Soc2Iso27001CrosswalkFile)
    related: dict[str, set[str]] = {}
    first_index: dict[str, int] = {}
    for index, entry in enumerate(crosswalk.mappings):
        here = doc.line("mappings", index, "soc2")
        if entry.soc2 in first_index:
            first = doc.line("mappings", first_index[entry.soc2], "soc2")
            raise CatalogError(
                doc.path, here, f"{entry.soc2} is mapped twice (first at line {first}); merge them"
            )
        first_index[entry.soc2] = index
        if entry.soc2 not in soc2.controls:
            raise CatalogError(doc.path, here, f"SOC2:{entry.soc2} is not in {soc2.source.name}")
        soc2_id = f"SOC2:{entry.soc2}"
        for position, iso_local in enumerate(entry.iso27001):
            iso_here = doc.line("mappings", index, "iso27001", position)
            iso_id = f"ISO27001:{iso_local}"
            if iso_local not in iso27001.controls:
                raise CatalogError(doc.path, iso_here, f"{iso_id} is not in {iso27001.source.name}")
            if iso_id in related.get(soc2_id, ()):
                raise CatalogError(doc.path, iso_here, f"{iso_id} is listed twice for {soc2_id}")
            related.setdefault(soc2_id, set()).add(iso_id)
            related.setdefault(iso_id, set()).add(soc2_id)
    return MappingProxyType({key: frozenset(ids) for key, ids in related.items()})


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

    def validate(self, model: type[_Model]) -> _Model:
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            loc = tuple(first["loc"])
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
    """Every qualified control id written in the non-test ``.rego`` files under
    ``rego_dir`` (METADATA ``labels.controls`` items and string literals alike),
    with the file and 1-based line of each use, files in sorted order."""
    if not rego_dir.is_dir():
        raise NotADirectoryError(f"{rego_dir}: not a directory of Rego modules")
    uses: dict[str, list[tuple[Path, int]]] = {}
    for path in sorted(rego_dir.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            for match in _REGO_CONTROL_REFERENCE.finditer(line):
                uses.setdefault(_trim_reference(match.group()), []).append((path, number))
    return uses


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
