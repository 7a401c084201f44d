"""Control catalogs: the real files are complete and consistent, bad files are refused
with file and line, and every control id the Rego library cites is catalogued."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from nexus_audit.catalog import (
    CROSSWALK_SOC2_ISO27001_FILE,
    GDPR_FILE,
    ISO27001_FILE,
    SOC2_FILE,
    CatalogError,
    Catalogs,
    ControlUse,
    UnknownControlError,
    controls_in_rego,
    default_catalog_dir,
    load_catalogs,
    unknown_controls_in_rego,
)

REPO = Path(__file__).resolve().parents[3]
CATALOG_DIR = REPO / "compliance-mappings"
REGO_DIR = REPO / "rego"


def _series(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{number}" for number in range(1, count + 1)]


SOC2_IDS = [
    *_series("CC1", 5),
    *_series("CC2", 3),
    *_series("CC3", 4),
    *_series("CC4", 2),
    *_series("CC5", 3),
    *_series("CC6", 8),
    *_series("CC7", 5),
    *_series("CC8", 1),
    *_series("CC9", 2),
    *_series("A1", 3),
    *_series("C1", 2),
    *_series("PI1", 5),
    *_series("P1", 1),
    *_series("P2", 1),
    *_series("P3", 2),
    *_series("P4", 3),
    *_series("P5", 2),
    *_series("P6", 7),
    *_series("P7", 1),
    *_series("P8", 1),
]
ISO27001_IDS = [
    *_series("A.5", 37),
    *_series("A.6", 8),
    *_series("A.7", 14),
    *_series("A.8", 34),
]
GDPR_ARTICLES = [
    5,
    6,
    7,
    15,
    16,
    17,
    18,
    20,
    21,
    22,
    24,
    25,
    28,
    30,
    32,
    33,
    34,
    35,
    44,
    45,
    46,
    49,
]


@pytest.fixture(scope="module")
def catalogs() -> Catalogs:
    return load_catalogs(CATALOG_DIR)


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    """A writable copy of the real catalogs, for breaking one file at a time."""
    return Path(shutil.copytree(CATALOG_DIR, tmp_path / "compliance-mappings"))


def _replace(path: Path, old: str, new: str) -> int:
    """Replace the first ``old`` in ``path``; return the 1-based line it was on."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return line


# --- the real catalogs -------------------------------------------------------


def test_soc2_catalog_holds_exactly_the_61_trust_services_criteria(catalogs: Catalogs) -> None:
    assert len(SOC2_IDS) == 61
    assert list(catalogs.soc2.controls) == SOC2_IDS


def test_iso27001_catalog_holds_exactly_the_93_annex_a_controls(catalogs: Catalogs) -> None:
    assert len(ISO27001_IDS) == 93
    assert list(catalogs.iso27001.controls) == ISO27001_IDS


def test_gdpr_catalog_holds_the_articles_the_project_relies_on(catalogs: Catalogs) -> None:
    for article in GDPR_ARTICLES:
        assert catalogs.is_known(f"GDPR:Art.{article}")


@pytest.mark.parametrize(
    ("qualified_id", "group", "title"),
    [
        ("SOC2:CC6.1", "Logical and Physical Access Controls", None),
        ("SOC2:A1.1", "Availability", None),
        ("ISO27001:A.5.15", "Organizational", "Access control"),
        ("ISO27001:A.8.15", "Technological", "Logging"),
        ("GDPR:Art.17", "Chapter III: Rights of the data subject", None),
    ],
)
def test_known_qualified_ids_resolve_to_their_control(
    catalogs: Catalogs, qualified_id: str, group: str, title: str | None
) -> None:
    control = catalogs.control(qualified_id)
    assert control.qualified_id == qualified_id
    assert control.group == group
    assert control.title
    if title is not None:
        assert control.title == title
    assert catalogs.is_known(qualified_id)


@pytest.mark.parametrize(
    "qualified_id",
    [
        "SOC2:CC6.9",
        "ISO27001:A.5.38",
        "ISO27001:A.9.1",
        "GDPR:Art.99",
        "GDPR:Art.17(1)",
        "HIPAA:164.312",
        "soc2:CC6.1",
        "CC6.1",
        "",
    ],
)
def test_unknown_qualified_ids_raise(catalogs: Catalogs, qualified_id: str) -> None:
    assert not catalogs.is_known(qualified_id)
    with pytest.raises(UnknownControlError) as caught:
        catalogs.control(qualified_id)
    assert caught.value.qualified_id == qualified_id
    with pytest.raises(UnknownControlError):
        catalogs.related(qualified_id)


def test_frameworks_are_keyed_by_their_qualified_id_prefix(catalogs: Catalogs) -> None:
    assert set(catalogs.frameworks) == {"SOC2", "ISO27001", "GDPR"}
    assert catalogs.frameworks["SOC2"] is catalogs.soc2
    assert catalogs.frameworks["ISO27001"] is catalogs.iso27001
    assert catalogs.frameworks["GDPR"] is catalogs.gdpr
    for key, framework in catalogs.frameworks.items():
        assert all(control.framework == key for control in framework.controls.values())


def test_crosswalk_relates_in_both_directions(catalogs: Catalogs) -> None:
    assert "ISO27001:A.5.15" in catalogs.related("SOC2:CC6.1")
    assert "SOC2:CC6.1" in catalogs.related("ISO27001:A.5.15")
    for framework in catalogs.frameworks.values():
        for control in framework.controls.values():
            for other in catalogs.related(control.qualified_id):
                assert catalogs.is_known(other)
                assert other.split(":")[0] != control.framework
                assert control.qualified_id in catalogs.related(other)


@pytest.mark.parametrize("prefix", ["CC6.", "CC7.", "CC8.", "A1.", "C1.", "PI1."])
def test_crosswalk_covers_every_criterion_of_the_technical_series(
    catalogs: Catalogs, prefix: str
) -> None:
    series = [c for c in catalogs.soc2.controls.values() if c.id.startswith(prefix)]
    assert series
    for control in series:
        assert catalogs.related(control.qualified_id), control.qualified_id


def test_gdpr_articles_have_no_crosswalk(catalogs: Catalogs) -> None:
    assert catalogs.related("GDPR:Art.17") == frozenset()


def test_default_catalog_dir_is_the_repositorys(catalogs: Catalogs) -> None:
    assert default_catalog_dir() == CATALOG_DIR.resolve()


# --- bad catalog files -------------------------------------------------------


def test_duplicate_control_id_is_refused_at_its_line(catalog_copy: Path) -> None:
    line = _replace(catalog_copy / SOC2_FILE, "id: CC1.2", "id: CC1.1")
    with pytest.raises(CatalogError, match=re.escape("duplicate control id 'CC1.1'")) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == SOC2_FILE
    assert caught.value.line == line
    assert f"{SOC2_FILE}:{line}:" in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "unknown"),
    [
        ("{soc2: A1.1, iso27001: [A.8.6,", "{soc2: A1.1, iso27001: [A.8.35,", "ISO27001:A.8.35"),
        ("{soc2: CC9.2,", "{soc2: CC9.3,", "SOC2:CC9.3"),
    ],
)
def test_crosswalk_naming_an_unknown_control_is_refused(
    catalog_copy: Path, old: str, new: str, unknown: str
) -> None:
    line = _replace(catalog_copy / CROSSWALK_SOC2_ISO27001_FILE, old, new)
    with pytest.raises(CatalogError, match=re.escape(f"{unknown} is not in")) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == CROSSWALK_SOC2_ISO27001_FILE
    assert caught.value.line == line


def test_crosswalk_mapping_a_criterion_twice_is_refused(catalog_copy: Path) -> None:
    line = _replace(catalog_copy / CROSSWALK_SOC2_ISO27001_FILE, "{soc2: CC6.2,", "{soc2: CC6.1,")
    with pytest.raises(CatalogError, match=re.escape("CC6.1 is mapped twice")) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.line == line


def test_iso27001_catalog_missing_a_control_is_refused(catalog_copy: Path) -> None:
    _replace(
        catalog_copy / ISO27001_FILE,
        "  - {id: A.8.34, theme: Technological, title: "
        "Protection of information systems during audit testing}\n",
        "",
    )
    controls_line = _replace(catalog_copy / ISO27001_FILE, "controls:", "controls:")
    with pytest.raises(
        CatalogError, match=re.escape("exactly 93 controls; this file lists 92")
    ) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == ISO27001_FILE
    assert caught.value.line == controls_line


def test_soc2_catalog_with_an_extra_criterion_is_refused(catalog_copy: Path) -> None:
    path = catalog_copy / SOC2_FILE
    with path.open("a", encoding="utf-8") as out:
        out.write("  - id: CC9.3\n    category: Risk Mitigation\n    title: Not a criterion\n")
    with pytest.raises(CatalogError, match=re.escape("exactly 61 controls; this file lists 62")):
        load_catalogs(catalog_copy)


def test_malformed_yaml_is_refused_naming_the_file_and_line(catalog_copy: Path) -> None:
    (catalog_copy / GDPR_FILE).write_text(
        "framework: GDPR\ncontrols:\n  - {id: Art.5, title: [unclosed\n", encoding="utf-8"
    )
    with pytest.raises(CatalogError, match="invalid YAML") as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == GDPR_FILE
    assert caught.value.line is not None
    assert GDPR_FILE in str(caught.value)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (SOC2_FILE, "id: CC6.1", "id: CC6-1", "'CC6-1' is not a SOC 2 criterion id"),
        (SOC2_FILE, "id: CC6.1\n", "id: CC6.1\n    owner: security\n", "unknown key"),
        (SOC2_FILE, "id: CC6.1\n", "id: CC6.1\n    id: CC6.9\n", "duplicate key 'id'"),
        (
            ISO27001_FILE,
            "{id: A.6.1, theme: People",
            "{id: A.6.1, theme: Physical",
            "theme 'People'",
        ),
        (GDPR_FILE, "{id: Art.17,", "{id: Article17,", "'Article17' is not a GDPR article id"),
        (GDPR_FILE, 'edition: "2016', 'edition: 2016 #"', "put the value in quotes"),
    ],
)
def test_invalid_entries_are_refused_at_their_line(
    catalog_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    line = _replace(catalog_copy / file, old, new)
    with pytest.raises(CatalogError, match=re.escape(message)) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == file
    assert caught.value.line in {line, line + 1}


def test_missing_catalog_file_is_refused(catalog_copy: Path) -> None:
    (catalog_copy / GDPR_FILE).unlink()
    with pytest.raises(CatalogError, match="catalog file is missing") as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == GDPR_FILE


# --- control ids in Rego -----------------------------------------------------

_MODULE = """\
package nexus.example

# METADATA
# title: Example
# labels:
#   controls:
#     - SOC2:CC6.1
#     - ISO27001:A.5.15
deny contains "x" if input.bad

# Cites SOC2:CC9.9 in prose (see GDPR:Art.17).
default reason := {"controls": ["GDPR:Art.17", "SOC2:CC6.1"]}
"""


def test_controls_in_rego_finds_metadata_items_and_string_literals(tmp_path: Path) -> None:
    module = tmp_path / "nexus" / "example.rego"
    module.parent.mkdir()
    module.write_text(_MODULE, encoding="utf-8")
    (tmp_path / "nexus" / "example_test.rego").write_text(
        'package nexus.example_test\n\ncontrols := ["SOC2:CC0.0"]\n', encoding="utf-8"
    )
    assert controls_in_rego(tmp_path) == {
        "SOC2:CC6.1": [(module, 7), (module, 12)],
        "ISO27001:A.5.15": [(module, 8)],
        "SOC2:CC9.9": [(module, 11)],
        "GDPR:Art.17": [(module, 11), (module, 12)],
    }


def test_unknown_controls_in_rego_name_file_and_line(catalogs: Catalogs, tmp_path: Path) -> None:
    module = tmp_path / "example.rego"
    module.write_text(_MODULE, encoding="utf-8")
    unknown = unknown_controls_in_rego(catalogs, tmp_path)
    assert unknown == [ControlUse("SOC2:CC9.9", module, 11)]
    assert str(unknown[0]) == f"{module}:11: SOC2:CC9.9"


def test_every_control_cited_by_the_rego_library_is_catalogued(catalogs: Catalogs) -> None:
    assert controls_in_rego(REGO_DIR), "found no control ids in rego/; has the layout changed?"
    unknown = unknown_controls_in_rego(catalogs, REGO_DIR)
    assert not unknown, "unknown control ids:\n" + "\n".join(str(use) for use in unknown)
