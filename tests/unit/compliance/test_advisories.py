"""pip-audit's findings judged: a fixable advisory always fails, an unfixable one only
passes when supply-chain/advisories.yaml accepts it with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.compliance.supply_chain import supply_chain


def _report(*vulns: dict[str, Any], skip: bool = False) -> dict[str, Any]:
    dependency: dict[str, Any] = {"name": "Jinja2", "version": "3.1.2", "vulns": list(vulns)}
    if skip:
        dependency = {"name": "jinja2", "skip_reason": "Dependency not found on PyPI"}
    return {"dependencies": [dependency, {"name": "idna", "version": "3.10", "vulns": []}]}


FIXABLE = {"id": "PYSEC-2024-1", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]}
UNFIXABLE = {"id": "GHSA-aaaa-bbbb-cccc", "fix_versions": [], "aliases": ["CVE-2099-1"]}


def test_the_accepted_advisories_file_is_valid() -> None:
    accepted = supply_chain.accepted_advisories()
    assert all(reason.strip() for _, reason, _ in accepted.values())


def test_a_vulnerability_with_a_fix_fails_even_when_accepted() -> None:
    advisories = supply_chain.advisories_of(_report(FIXABLE))
    accepted = {"PYSEC-2024-1": ("jinja2", "we do not render untrusted templates", 3)}
    failures, kept, _ = supply_chain.judge_advisories(advisories, accepted)
    assert failures == ["jinja2 3.1.2: PYSEC-2024-1 is fixed in 3.1.3; upgrade it"]
    assert kept == []


def test_a_vulnerability_without_a_fix_needs_a_reasoned_acceptance() -> None:
    advisories = supply_chain.advisories_of(_report(UNFIXABLE))
    failures, _, _ = supply_chain.judge_advisories(advisories, {})
    assert len(failures) == 1 and "has no fixed version; accept it" in failures[0]

    by_alias = {"CVE-2099-1": ("jinja2", "only reachable through a feature we disable", 7)}
    failures, kept, stale = supply_chain.judge_advisories(advisories, by_alias)
    assert failures == [] and stale == []
    assert kept == [
        "jinja2 3.1.2: GHSA-aaaa-bbbb-cccc (no fix yet) accepted: "
        "only reachable through a feature we disable"
    ]


def test_an_acceptance_for_another_package_or_no_longer_reported_does_not_count() -> None:
    advisories = supply_chain.advisories_of(_report(UNFIXABLE))
    elsewhere = {"GHSA-aaaa-bbbb-cccc": ("markupsafe", "other package", 4)}
    failures, _, stale = supply_chain.judge_advisories(advisories, elsewhere)
    assert len(failures) == 1
    assert stale == ["advisories.yaml:4: GHSA-aaaa-bbbb-cccc (markupsafe) no longer reported"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("accepted:\n  - {id: X-1, package: jinja2}\n", 2, "exactly id, package and reason"),
        ("accepted:\n  - {id: X-1, package: p, reason: ok}\n"
         "  - {id: X-2, package: p, reason: ''}\n", 3, "non-empty"),
        ("ignore: []\n", 1, "one key, 'accepted'"),
    ],
)  # fmt: skip
def test_a_malformed_acceptance_is_refused_at_its_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "advisories.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        supply_chain.accepted_advisories(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_the_command_fails_on_unaudited_dependencies_and_reports_none_audited_apart(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(skip=True)))
    assert supply_chain.main(["advisories", str(report)]) == 1
    nothing = {"dependencies": [{"name": "idna", "skip_reason": "Dependency not found on PyPI"}]}
    report.write_text(json.dumps(nothing))
    assert supply_chain.main(["advisories", str(report)]) == supply_chain.EXIT_NOT_RUN
    report.write_text(json.dumps(_report()))
    assert supply_chain.main(["advisories", str(report)]) == 0
