"""The OSCAL component definition: every control the Rego library and the audit events
claim, by rule, in compliance-trestle's convention, valid against NIST's schema."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nexus_audit.catalog import Catalogs, UnknownControlError
from nexus_audit.component import (
    TRESTLE_NAMESPACE,
    component_definition,
    implementing_rules,
    main,
)
from nexus_audit.events import EVENT_CONTROLS
from nexus_audit.metadata import rego_annotations
from tests.conftest import REGO
from tests.unit.audit.oscal_schema import component_definition_validator

GENERATED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def document(catalogs: Catalogs) -> dict[str, Any]:
    return component_definition(catalogs, implementing_rules(catalogs, REGO), generated=GENERATED)


def _component(document: dict[str, Any], kind: str, title_start: str) -> dict[str, Any]:
    components = document["component-definition"]["components"]
    found = [c for c in components if c["type"] == kind and c["title"].startswith(title_start)]
    assert len(found) == 1
    return found[0]


def _trestle(props: list[dict[str, str]], name: str) -> list[str]:
    return [p["value"] for p in props if p["name"] == name and p["ns"] == TRESTLE_NAMESPACE]


def _implemented(document: dict[str, Any], framework: str) -> dict[str, list[str]]:
    """control (qualified) → its Rule_Ids, for one framework's control implementation."""
    service = _component(document, "service", "NexusAI policy")
    implementation = next(
        ci
        for ci in service["control-implementations"]
        if ci["props"][0]["name"] == "Framework_Short_Name" and ci["props"][0]["value"] == framework
    )
    return {
        next(p["value"] for p in req["props"] if p["name"] == "control"): _trestle(
            req["props"], "Rule_Id"
        )
        for req in implementation["implemented-requirements"]
    }


def test_the_component_definition_validates_against_nists_schema(
    document: dict[str, Any],
) -> None:
    errors = sorted(
        component_definition_validator().iter_errors(document),
        key=lambda e: list(e.absolute_path),
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert document["component-definition"]["metadata"]["oscal-version"] == "1.1.2"


def test_the_schema_check_itself_rejects_a_broken_definition(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    service = broken["component-definition"]["components"][0]
    service["control-implementations"][0]["implemented-requirements"][0]["control-id"] = (
        "164.312(b)"
    )
    del service["title"]
    messages = [e.message for e in component_definition_validator().iter_errors(broken)]
    assert any("'title' is a required property" in m for m in messages)
    assert any("does not match" in m for m in messages)


def test_tool_approvals_implement_human_oversight_and_audit_controls(
    document: dict[str, Any],
) -> None:
    approval_rules = {
        "nexus.tools.approval_required",
        "nexus.tools.approval_invalid",
        "nexus.tools.approval_verified",
    }
    assert approval_rules <= set(_implemented(document, "euaiact")["EUAIACT:Art.14"])
    assert approval_rules <= set(_implemented(document, "hipaa")["HIPAA:164.312(b)"])
    assert "nexus.envoy.authz" in _implemented(document, "euaiact")["EUAIACT:Art.12"]


def test_every_annotated_rule_and_event_type_is_a_rule_set_with_its_check(
    document: dict[str, Any],
) -> None:
    annotated = {a.name for a in rego_annotations(REGO) if a.controls}
    events = {f"audit.event.{event.rstrip('.')}" for event in EVENT_CONTROLS}
    service = _component(document, "service", "NexusAI policy")
    opa = _component(document, "validation", "Open Policy Agent")
    audit = _component(document, "validation", "NexusAI audit log")

    assert set(_trestle(service["props"], "Rule_Id")) == annotated | events
    assert set(_trestle(opa["props"], "Rule_Id")) == annotated
    assert set(_trestle(audit["props"], "Rule_Id")) == events
    for component in (service, opa, audit):
        by_set: dict[str, dict[str, str]] = {}
        for prop in component["props"]:
            assert prop["ns"] == TRESTLE_NAMESPACE
            by_set.setdefault(prop["remarks"], {})[prop["name"]] = prop["value"]
        expected = (
            {"Rule_Id", "Rule_Description"}
            if component is service
            else {"Rule_Id", "Check_Id", "Check_Description"}
        )
        assert all(set(fields) == expected for fields in by_set.values())
    assert "data.nexus.tools.deny" in _trestle(opa["props"], "Check_Id")


def test_every_rule_id_an_implemented_requirement_names_is_defined(
    document: dict[str, Any], catalogs: Catalogs
) -> None:
    service = _component(document, "service", "NexusAI policy")
    defined = set(_trestle(service["props"], "Rule_Id"))
    frameworks = set()
    for implementation in service["control-implementations"]:
        frameworks.add(implementation["props"][0]["value"])
        for requirement in implementation["implemented-requirements"]:
            assert set(_trestle(requirement["props"], "Rule_Id")) <= defined
    assert frameworks == {key.lower() for key in catalogs.frameworks}


def test_the_same_sources_give_the_same_document(catalogs: Catalogs) -> None:
    rules = implementing_rules(catalogs, REGO)
    first = component_definition(catalogs, rules, generated=GENERATED)
    second = component_definition(catalogs, implementing_rules(catalogs, REGO), generated=GENERATED)
    assert first == second


def test_a_control_no_catalog_defines_is_refused(catalogs: Catalogs, tmp_path: Path) -> None:
    rego = Path(shutil.copytree(REGO, tmp_path / "rego"))
    tools = rego / "nexus" / "tools.rego"
    tools.write_text(
        tools.read_text().replace("#     - EUAIACT:Art.14\n", "#     - EUAIACT:Art.99\n", 1)
    )
    with pytest.raises(UnknownControlError, match=re.escape("EUAIACT:Art.99")):
        implementing_rules(catalogs, rego)


def test_main_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "component-definition.json"
    assert main(["--rego", str(REGO), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert not list(component_definition_validator().iter_errors(written))


def test_audit_components_writes_a_definition_that_validates(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nexus_audit.cli import audit_app

    target = tmp_path / "component-definition.json"
    result = CliRunner().invoke(audit_app, ["components", "--out", str(target)])
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text(encoding="utf-8"))
    assert not list(component_definition_validator().iter_errors(written))
    (service,) = [
        c for c in written["component-definition"]["components"] if c["type"] == "service"
    ]
    described = [ci["description"] for ci in service["control-implementations"]]
    for name in ("HIPAA", "PCI DSS", "EU Artificial Intelligence Act", "ISO/IEC 42001"):
        assert any(text.startswith(name) for text in described), name
