"""OSCAL 1.1.2 component definition: which controls this project implements, by what.

The document follows the convention compliance-trestle and OSCAL Compass's
Compliance-to-Policy read: the component under assessment (``service``) lists
its rules as ``Rule_Id`` / ``Rule_Description`` props grouped by ``remarks``
(``rule_set_NN``), and one control implementation per framework whose
implemented requirements name the rules by ``Rule_Id``; the components that
check those rules (``validation``) repeat each ``Rule_Id`` with its
``Check_Id`` and ``Check_Description``. Both sets of props are in trestle's
namespace, `TRESTLE_NAMESPACE`.

Two kinds of rule implement controls here:

- every Rego METADATA block that lists ``labels.controls``: a rule (its
  ``custom.id``, else its path) or a package (whose labels OPA puts on every
  decision it evaluates there); checked by OPA, evidenced by the decisions
  the audit log records;
- every control-plane and audit event type of `nexus_audit.events.EVENT_CONTROLS`;
  checked and evidenced by the audit log itself.

Identifiers are name-based UUIDs, so the same sources give the same document
but for ``last-modified``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexus_audit.catalog import Catalogs, default_catalog_dir, load_catalogs
from nexus_audit.entry import format_time
from nexus_audit.events import EVENT_CONTROLS
from nexus_audit.metadata import RegoAnnotation, rego_annotations
from nexus_audit.oscal import NEXUS_NAMESPACE, OSCAL_VERSION, control_token

__all__ = [
    "TRESTLE_NAMESPACE",
    "ImplementingRule",
    "component_definition",
    "implementing_rules",
    "main",
]

TRESTLE_NAMESPACE = "https://oscal-compass.github.io/compliance-trestle/schemas/oscal/cd"
"""Namespace of the Rule_Id / Check_Id props compliance-trestle and C2P read."""

_FRAMEWORK_PROP_NAMESPACE = "https://oscal-compass.github.io/compliance-trestle/schemas/oscal"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://nexus.ai/ns/oscal/component-definition")

_POLICY_COMPONENT = "NexusAI policy control plane"
_OPA_COMPONENT = "Open Policy Agent with the NexusAI ext_authz plugin"
_AUDIT_COMPONENT = "NexusAI audit log"


@dataclass(frozen=True)
class ImplementingRule:
    """One rule and the controls it implements, with what checks it.

    ``checker`` is the title of the validation component; ``check_id`` names
    the check inside it (a Rego rule path, or an event type).
    """

    rule_id: str
    title: str
    description: str
    controls: tuple[str, ...]
    checker: str
    check_id: str
    check_description: str
    source: str


def implementing_rules(catalogs: Catalogs, rego_dir: Path) -> list[ImplementingRule]:
    """The Rego rules and event types that name controls, in a stable order.

    Every control id must be in ``catalogs`` (`nexus_audit.catalog.UnknownControlError`
    otherwise): a component definition never claims a control nobody catalogued.
    Two blocks naming the same rule raise ValueError: a Rule_Id must be unique.
    """
    rules = [
        _rego_rule(annotation, catalogs, rego_dir)
        for annotation in rego_annotations(rego_dir)
        if annotation.controls
    ]
    first: dict[str, str] = {}
    for rule in rules:
        if rule.rule_id in first:
            raise ValueError(
                f"{rule.source}: rule id {rule.rule_id!r} is already used at "
                f"{first[rule.rule_id]}; give one of them a METADATA custom.id"
            )
        first[rule.rule_id] = rule.source
    for event_type, controls in sorted(EVENT_CONTROLS.items()):
        for control in controls:
            catalogs.control(control)
        pattern = f"{event_type}*" if event_type.endswith(".") else event_type
        rules.append(
            ImplementingRule(
                rule_id=f"audit.event.{event_type.rstrip('.')}",
                title=f"{pattern} events logged",
                description=(
                    f"Every {pattern} event is appended to the Merkle audit log "
                    "with the control ids it evidences."
                ),
                controls=tuple(controls),
                checker=_AUDIT_COMPONENT,
                check_id=pattern,
                check_description=f"Leaves of type {pattern} in the audit log.",
                source="audit/nexus_audit/events.py",
            )
        )
    return rules


def _rego_rule(annotation: RegoAnnotation, catalogs: Catalogs, rego_dir: Path) -> ImplementingRule:
    controls = tuple(dict.fromkeys(control for control, _ in annotation.controls))
    for control in controls:
        catalogs.control(control)
    title = annotation.title or annotation.name
    summary = _one_line(f"{title}: {annotation.description}" if annotation.description else title)
    where = annotation.path.relative_to(rego_dir.parent).as_posix()
    if annotation.rule is None:
        check_id = f"data.{annotation.package}"
        check = (
            f"Every decision OPA evaluates in package {annotation.package} carries these labels."
        )
    else:
        check_id = f"data.{annotation.package}.{annotation.rule}"
        check = f"OPA evaluates {check_id}; the decision log records it with its controls."
    return ImplementingRule(
        rule_id=annotation.name,
        title=title,
        description=summary,
        controls=controls,
        checker=_OPA_COMPONENT,
        check_id=check_id,
        check_description=check,
        source=f"{where}:{annotation.line}",
    )


def component_definition(
    catalogs: Catalogs, rules: Sequence[ImplementingRule], *, generated: datetime
) -> dict[str, Any]:
    """The ``{"component-definition": ...}`` document for ``rules``."""
    rule_sets = {rule.rule_id: f"rule_set_{n:02d}" for n, rule in enumerate(rules)}
    resources: list[dict[str, Any]] = []
    implementations = []
    for framework in catalogs.frameworks.values():
        implemented = [
            (control, [rule for rule in rules if control.qualified_id in rule.controls])
            for control in framework.controls.values()
        ]
        implemented = [(control, by) for control, by in implemented if by]
        if not implemented:
            continue
        resource = _uuid("catalog", framework.key)
        resources.append(
            {
                "uuid": resource,
                "title": f"{framework.name} ({framework.edition})",
                "description": (
                    "The project's catalog of this framework: control ids and our own "
                    "short titles, not the framework's text."
                ),
                "rlinks": [{"href": f"compliance-mappings/{framework.source.name}"}],
            }
        )
        implementations.append(
            {
                "uuid": _uuid("control-implementation", framework.key),
                "source": f"#{resource}",
                "description": (
                    f"{framework.name} controls evidenced by the gateway policy's decisions "
                    "and the control plane's events, as recorded in the audit log."
                ),
                "props": [
                    {
                        "name": "Framework_Short_Name",
                        "ns": _FRAMEWORK_PROP_NAMESPACE,
                        "value": framework.key.lower(),
                    }
                ],
                "implemented-requirements": [
                    {
                        "uuid": _uuid("implemented-requirement", control.qualified_id),
                        "control-id": control_token(control),
                        "description": _one_line(
                            f"{control.title}. Implemented by "
                            + "; ".join(f"{rule.title} ({rule.rule_id})" for rule in by)
                            + "."
                        ),
                        "props": [
                            {
                                "name": "control",
                                "ns": NEXUS_NAMESPACE,
                                "value": control.qualified_id,
                            },
                            *(_trestle("Rule_Id", rule.rule_id) for rule in by),
                        ],
                    }
                    for control, by in implemented
                ],
            }
        )
    policy_props = [
        prop
        for rule in rules
        for prop in (
            _trestle("Rule_Id", rule.rule_id, rule_sets[rule.rule_id]),
            _trestle("Rule_Description", rule.description, rule_sets[rule.rule_id]),
        )
    ]
    components = [
        {
            "uuid": _uuid("component", _POLICY_COMPONENT),
            "type": "service",
            "title": _POLICY_COMPONENT,
            "description": (
                "Policy-as-code for the NexusAI gateway: signed OPA bundles rolled out to "
                "Envoy + OPA enforcers, every decision and change appended to a verifiable "
                "Merkle audit log tagged with the control ids it evidences."
            ),
            "props": policy_props,
            "control-implementations": implementations,
        },
        *(
            _validation_component(
                title, description, [r for r in rules if r.checker == title], rule_sets
            )
            for title, description in (
                (
                    _OPA_COMPONENT,
                    "The enforcer (data-plane/opa): OPA v1.22.2 evaluating the rego/ library "
                    "for every gateway request and logging each decision with its rule labels.",
                ),
                (
                    _AUDIT_COMPONENT,
                    "The audit service (audit/nexus_audit): an append-only RFC 9162 Merkle log "
                    "of decisions and events, signed checkpoints, proofs and evidence exports.",
                ),
            )
        ),
    ]
    return {
        "component-definition": {
            "uuid": _uuid("component-definition", _POLICY_COMPONENT),
            "metadata": {
                "title": f"{_POLICY_COMPONENT}: controls implemented",
                "last-modified": format_time(generated),
                "version": "1",
                "oscal-version": OSCAL_VERSION,
            },
            "components": components,
            "back-matter": {"resources": resources},
        }
    }


def _validation_component(
    title: str, description: str, rules: Iterable[ImplementingRule], rule_sets: Mapping[str, str]
) -> dict[str, Any]:
    props = [
        prop
        for rule in rules
        for prop in (
            _trestle("Rule_Id", rule.rule_id, rule_sets[rule.rule_id]),
            _trestle("Check_Id", rule.check_id, rule_sets[rule.rule_id]),
            _trestle("Check_Description", rule.check_description, rule_sets[rule.rule_id]),
        )
    ]
    return {
        "uuid": _uuid("component", title),
        "type": "validation",
        "title": title,
        "description": description,
        "props": props,
    }


def _trestle(name: str, value: str, rule_set: str | None = None) -> dict[str, str]:
    prop = {"name": name, "ns": TRESTLE_NAMESPACE, "value": value}
    if rule_set is not None:
        prop["remarks"] = rule_set
    return prop


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, "/".join(parts)))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nexus_audit.component``: write the component definition as JSON."""
    parser = argparse.ArgumentParser(prog="python -m nexus_audit.component", description=__doc__)
    parser.add_argument("--rego", type=Path, default=None, help="Rego library (default: rego/)")
    parser.add_argument("--catalogs", type=Path, default=None, help="compliance-mappings/")
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    catalogs = load_catalogs(args.catalogs)
    rego_dir = args.rego or default_catalog_dir().parent / "rego"
    document = component_definition(
        catalogs, implementing_rules(catalogs, rego_dir), generated=datetime.now(UTC)
    )
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
