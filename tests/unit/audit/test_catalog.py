"""Control catalogs: the real files are complete and consistent, bad files are refused
with file and line, and every control id the Rego library cites is catalogued."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from nexus_audit.catalog import (
    FRAMEWORKS,
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

SOC2_FILE = "soc2-tsc-2017.yaml"
ISO27001_FILE = "iso27001-2022-annex-a.yaml"
GDPR_FILE = "gdpr.yaml"
HIPAA_FILE = "hipaa-security-rule.yaml"
PCI_FILE = "pci-dss-4.0.1.yaml"
EUAIACT_FILE = "eu-ai-act.yaml"
ISO42001_FILE = "iso42001-2023-annex-a.yaml"
CROSSWALK_SOC2_ISO27001_FILE = "crosswalk-soc2-iso27001.yaml"
CROSSWALK_HIPAA_FILE = "crosswalk-hipaa.yaml"
CROSSWALK_PCI_FILE = "crosswalk-pci.yaml"
CROSSWALK_EUAIACT_FILE = "crosswalk-euaiact.yaml"
CROSSWALK_ISO42001_FILE = "crosswalk-iso42001.yaml"


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
HIPAA_IDS = [
    "164.308(a)(1)(ii)(D)",
    "164.308(a)(3)(i)",
    "164.308(a)(3)(ii)(A)",
    "164.308(a)(3)(ii)(B)",
    "164.308(a)(3)(ii)(C)",
    "164.308(a)(4)(i)",
    "164.308(a)(4)(ii)(B)",
    "164.308(a)(4)(ii)(C)",
    "164.308(a)(5)(ii)(C)",
    "164.312(a)(1)",
    "164.312(a)(2)(i)",
    "164.312(a)(2)(ii)",
    "164.312(a)(2)(iii)",
    "164.312(a)(2)(iv)",
    "164.312(b)",
    "164.312(c)(1)",
    "164.312(c)(2)",
    "164.312(d)",
    "164.312(e)(1)",
    "164.312(e)(2)(i)",
    "164.312(e)(2)(ii)",
]
PCI_IDS = [
    *_series("6.5", 6),
    *_series("7.1", 2),
    *_series("7.2", 5),
    "7.2.5.1",
    "7.2.6",
    *_series("7.3", 3),
    *_series("8.1", 2),
    *_series("8.2", 8),
    *_series("8.3", 10),
    "8.3.10.1",
    "8.3.11",
    *_series("8.4", 3),
    "8.5.1",
    *_series("8.6", 3),
    *_series("10.1", 2),
    "10.2.1",
    *_series("10.2.1", 7),
    "10.2.2",
    *_series("10.3", 4),
    "10.4.1",
    "10.4.1.1",
    "10.4.2",
    "10.4.2.1",
    "10.4.3",
    "10.5.1",
    *_series("10.6", 3),
    *_series("10.7", 3),
]
EUAIACT_ARTICLES = [4, 5, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 26, 27, 50, 72, 73, 86]
ISO42001_IDS = [
    *[f"A.2.{n}" for n in (2, 3, 4)],
    *[f"A.3.{n}" for n in (2, 3)],
    *[f"A.4.{n}" for n in (2, 3, 4, 5, 6)],
    *[f"A.5.{n}" for n in (2, 3, 4, 5)],
    "A.6.1.2",
    "A.6.1.3",
    *[f"A.6.2.{n}" for n in range(2, 9)],
    *[f"A.7.{n}" for n in (2, 3, 4, 5, 6)],
    *[f"A.8.{n}" for n in (2, 3, 4, 5)],
    *[f"A.9.{n}" for n in (2, 3, 4)],
    *[f"A.10.{n}" for n in (2, 3, 4)],
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
    assert list(catalogs.framework("SOC2").controls) == SOC2_IDS


def test_iso27001_catalog_holds_exactly_the_93_annex_a_controls(catalogs: Catalogs) -> None:
    assert len(ISO27001_IDS) == 93
    assert list(catalogs.framework("ISO27001").controls) == ISO27001_IDS


def test_hipaa_catalog_holds_the_technical_and_the_evidenced_administrative_safeguards(
    catalogs: Catalogs,
) -> None:
    assert list(catalogs.framework("HIPAA").controls) == HIPAA_IDS
    groups = {c.id: c.group for c in catalogs.framework("HIPAA").controls.values()}
    assert {g for i, g in groups.items() if i.startswith("164.312")} == {"Technical"}
    assert {g for i, g in groups.items() if i.startswith("164.308")} == {"Administrative"}


def test_pci_catalog_holds_every_requirement_of_6_5_7_8_and_10(catalogs: Catalogs) -> None:
    assert len(PCI_IDS) == 74
    assert list(catalogs.framework("PCI").controls) == PCI_IDS


def test_eu_ai_act_catalog_holds_the_articles_an_ai_platform_evidences(
    catalogs: Catalogs,
) -> None:
    assert list(catalogs.framework("EUAIACT").controls) == [f"Art.{n}" for n in EUAIACT_ARTICLES]


def test_iso42001_catalog_holds_exactly_the_38_annex_a_controls(catalogs: Catalogs) -> None:
    assert len(ISO42001_IDS) == 38
    assert list(catalogs.framework("ISO42001").controls) == ISO42001_IDS


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
        ("HIPAA:164.312(b)", "Technical", None),
        ("HIPAA:164.308(a)(5)(ii)(C)", "Administrative", None),
        (
            "PCI:10.2.1",
            "10: Log and monitor all access to system components and cardholder data",
            None,
        ),
        ("PCI:7.2.5.1", "7: Restrict access by business need to know", None),
        ("EUAIACT:Art.12", "Chapter III, Section 2: Requirements for high-risk AI systems", None),
        ("ISO42001:A.6.2.8", "AI system life cycle", None),
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
        "HIPAA:164.312(f)",
        "HIPAA:164.310(a)(1)",
        "PCI:10.2",
        "PCI:3.5.1",
        "EUAIACT:Art.6",
        "EUAIACT:Art.12(1)",
        "ISO42001:A.1.1",
        "ISO42001:A.6.2.9",
        "NIST:AC-3",
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
    assert list(catalogs.frameworks) == [
        "SOC2",
        "ISO27001",
        "GDPR",
        "HIPAA",
        "PCI",
        "EUAIACT",
        "ISO42001",
    ]
    assert [spec.key for spec in FRAMEWORKS] == list(catalogs.frameworks)
    for key, framework in catalogs.frameworks.items():
        assert framework.source.name == next(s.file for s in FRAMEWORKS if s.key == key)
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
    series = [c for c in catalogs.framework("SOC2").controls.values() if c.id.startswith(prefix)]
    assert series
    for control in series:
        assert catalogs.related(control.qualified_id), control.qualified_id


def test_gdpr_articles_have_no_crosswalk_but_the_ai_acts(catalogs: Catalogs) -> None:
    assert catalogs.related("GDPR:Art.17") == frozenset()
    assert catalogs.related("GDPR:Art.22") == {"EUAIACT:Art.86"}


@pytest.mark.parametrize(
    ("qualified_id", "related"),
    [
        ("HIPAA:164.312(b)", {"SOC2:CC7.2", "ISO27001:A.8.15"}),
        ("PCI:10.2.1", {"SOC2:CC7.2", "ISO27001:A.8.15"}),
        ("EUAIACT:Art.12", {"ISO42001:A.6.2.8", "SOC2:CC7.2", "ISO27001:A.8.15"}),
        ("ISO42001:A.6.2.8", {"EUAIACT:Art.12", "EUAIACT:Art.19", "EUAIACT:Art.26"}),
    ],
)
def test_crosswalks_relate_the_new_frameworks_to_soc2_and_iso27001(
    catalogs: Catalogs, qualified_id: str, related: set[str]
) -> None:
    assert related <= catalogs.related(qualified_id)


def test_every_hipaa_safeguard_and_pci_requirement_of_7_8_10_has_a_soc2_or_iso_relation(
    catalogs: Catalogs,
) -> None:
    for key in ("HIPAA", "PCI"):
        for control in catalogs.framework(key).controls.values():
            assert {r.split(":")[0] for r in catalogs.related(control.qualified_id)} & {
                "SOC2",
                "ISO27001",
            }, control.qualified_id


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


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            HIPAA_FILE,
            "{id: 164.312(b), safeguard: Technical, title: ",
            "{id: 164.312(b), safeguard: Technical, headline: ",
            "controls.14.title: required key is missing",
        ),
        (
            HIPAA_FILE,
            "{id: 164.312(d), safeguard: Technical,",
            "{id: 164.312(d), safeguard: Administrative,",
            "164.312(d) belongs to safeguard 'Technical', not 'Administrative'",
        ),
        (HIPAA_FILE, "{id: 164.312(b),", "{id: 164.312b,", "'164.312b' is not a HIPAA"),
        (PCI_FILE, "{id: 10.5.1,", "{id: 10.5,", "(put the value in quotes)"),
        (PCI_FILE, "{id: 10.5.1,", '{id: "10.5",', "'10.5' is not a PCI DSS requirement id"),
        (
            PCI_FILE,
            '{id: 8.2.1, requirement: "8:',
            '{id: 8.2.1, requirement: "7:',
            "8.2.1 belongs to requirement '8: Identify users",
        ),
        (EUAIACT_FILE, "{id: Art.14,", "{id: Art.12,", "duplicate control id 'Art.12'"),
        (EUAIACT_FILE, "framework: EUAIACT", "framework: EU-AI-ACT", "this file is the EUAIACT"),
        (ISO42001_FILE, "{id: A.6.2.8,", "{id: A.11.1,", "'A.11.1' is not a ISO/IEC 42001"),
        (
            ISO42001_FILE,
            "{id: A.9.4, objective: Use of AI systems,",
            "{id: A.9.4, objective: AI policies,",
            "A.9.4 belongs to objective 'Use of AI systems'",
        ),
    ],
)
def test_invalid_entries_of_the_new_catalogs_are_refused_at_their_line(
    catalog_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    line = _replace(catalog_copy / file, old, new)
    with pytest.raises(CatalogError, match=re.escape(message)) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == file
    assert caught.value.line == line
    assert f"{file}:{line}: " in str(caught.value)


def test_an_entry_without_a_title_is_refused_at_its_line(catalog_copy: Path) -> None:
    line = _replace(
        catalog_copy / ISO42001_FILE,
        "  - {id: A.2.3, objective: AI policies, title: The AI policy is aligned with the "
        "organisation's other policies}",
        "  - {id: A.2.3, objective: AI policies}",
    )
    with pytest.raises(CatalogError, match=re.escape("title: required key is missing")) as caught:
        load_catalogs(catalog_copy)
    assert (caught.value.path.name, caught.value.line) == (ISO42001_FILE, line)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (CROSSWALK_HIPAA_FILE, "iso27001: [A.8.15]}", "iso27001: [A.8.35]}", "ISO27001:A.8.35"),
        (CROSSWALK_HIPAA_FILE, "{hipaa: 164.312(d),", "{hipaa: 164.312(f),", "HIPAA:164.312(f)"),
        (CROSSWALK_PCI_FILE, "{pci: 10.5.1, soc2: [CC7.2]", "{pci: 10.5.1, soc2: [CC7.9]", "CC7.9"),
        (
            CROSSWALK_EUAIACT_FILE,
            "iso42001: [A.6.2.8], soc2",
            "iso42001: [A.6.2.9], soc2",
            "A.6.2.9",
        ),
        (CROSSWALK_EUAIACT_FILE, "gdpr: [Art.22]", "gdpr: [Art.99]", "GDPR:Art.99 is not in"),
        (CROSSWALK_ISO42001_FILE, "{iso42001: A.10.4,", "{iso42001: A.10.5,", "ISO42001:A.10.5"),
    ],
)
def test_a_crosswalk_to_an_unknown_id_is_refused_at_its_line(
    catalog_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    line = _replace(catalog_copy / file, old, new)
    with pytest.raises(CatalogError, match=re.escape(message)) as caught:
        load_catalogs(catalog_copy)
    assert (caught.value.path.name, caught.value.line) == (file, line)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("targets: [SOC2, ISO27001]", "targets: [SOC2, NIST]", "'NIST' is not a framework key"),
        ("targets: [SOC2, ISO27001]", "targets: [SOC2, PCI]", "iso27001: unknown key"),
        ("targets: [SOC2, ISO27001]", "targets: [HIPAA]", "HIPAA is the source"),
        (
            "{hipaa: 164.312(b), soc2: [CC7.2], iso27001: [A.8.15]}",
            "{hipaa: 164.312(b)}",
            "relates to no control",
        ),
        ("{hipaa: 164.312(d),", "{hipaa: 164.312(b),", "164.312(b) is mapped twice"),
        (
            "soc2: [CC7.2], iso27001: [A.8.15]}",
            "soc2: [CC7.2, CC7.2], iso27001: [A.8.15]}",
            "listed twice",
        ),
    ],
)
def test_malformed_crosswalk_entries_are_refused(
    catalog_copy: Path, old: str, new: str, message: str
) -> None:
    _replace(catalog_copy / CROSSWALK_HIPAA_FILE, old, new)
    with pytest.raises(CatalogError, match=re.escape(message)) as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == CROSSWALK_HIPAA_FILE
    assert caught.value.line is not None


def test_a_yaml_file_that_is_no_known_catalog_is_refused(catalog_copy: Path) -> None:
    (catalog_copy / "nist-800-53.yaml").write_text("framework: NIST\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="neither a catalog") as caught:
        load_catalogs(catalog_copy)
    assert caught.value.path.name == "nist-800-53.yaml"


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


_NEW_FRAMEWORKS_MODULE = """\
# METADATA
# title: Example
package nexus.example

# METADATA
# title: Approval required
# labels:
#   controls:
#     - EUAIACT:Art.14
#     - HIPAA:164.312(b)
#     - PCI:7.2.3
#     - ISO42001:A.9.2
#     - hipaa:164.312(b)
#     - EUAIACT:Art.140
#     - NIST:AC-3
#     - HIPAA:164.312(z)
deny contains "x" if input.bad
"""


def test_metadata_ids_of_the_new_frameworks_are_checked_whatever_their_form(
    catalogs: Catalogs, tmp_path: Path
) -> None:
    module = tmp_path / "example.rego"
    module.write_text(_NEW_FRAMEWORKS_MODULE, encoding="utf-8")
    unknown = unknown_controls_in_rego(catalogs, tmp_path)
    assert [(use.control_id, use.line) for use in unknown] == [
        ("hipaa:164.312(b)", 13),
        ("EUAIACT:Art.140", 14),
        ("NIST:AC", 15),
        ("NIST:AC-3", 15),
        ("HIPAA:164.312(z)", 16),
    ]
    assert str(unknown[0]) == f"{module}:13: hipaa:164.312(b)"


def test_metadata_that_is_not_yaml_is_refused_at_its_line(tmp_path: Path) -> None:
    module = tmp_path / "example.rego"
    module.write_text(
        "package nexus.example\n\n# METADATA\n# title: [unclosed\n# labels: {}\nr := 1\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="METADATA is not YAML") as caught:
        controls_in_rego(tmp_path)
    assert caught.value.path == module
    assert caught.value.line in {4, 5}


def test_every_control_cited_by_the_rego_library_is_catalogued(catalogs: Catalogs) -> None:
    assert controls_in_rego(REGO_DIR), "found no control ids in rego/; has the layout changed?"
    unknown = unknown_controls_in_rego(catalogs, REGO_DIR)
    assert not unknown, "unknown control ids:\n" + "\n".join(str(use) for use in unknown)


def test_every_control_an_event_type_names_is_in_a_catalog() -> None:
    from nexus_audit.events import EVENT_CONTROLS

    catalogs = load_catalogs(CATALOG_DIR)
    unknown = [
        (event, control)
        for event, controls in EVENT_CONTROLS.items()
        for control in controls
        if not catalogs.is_known(control)
    ]
    assert unknown == []
    named = {
        control.partition(":")[0] for controls in EVENT_CONTROLS.values() for control in controls
    }
    assert {framework.key for framework in FRAMEWORKS} <= named | {"GDPR"}
