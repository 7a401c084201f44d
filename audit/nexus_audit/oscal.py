"""OSCAL 1.1.2 assessment results for an evidence export.

One result covers the export's period; for each control it reviewed it holds
one observation (what the log shows: decisions allowed and denied, events,
with the records, proofs and checkpoint as relevant evidence) and one finding
pointing at it. A finding is ``satisfied`` when the log holds evidence that
the control operated in the period and ``not-satisfied`` when it holds none:
it reports the evidence of operation, not an auditor's opinion.

The assessment plan is not a separate document: ``import-ap`` points at a
back-matter resource describing the continuous collection from the log.

The document names its framework (title, and ``framework`` props on the
metadata and the result) and each control twice: by an OSCAL token
(`control_token`, since OSCAL ids must start with a letter and hold no
parentheses, which HIPAA's and PCI DSS's do not) and by its qualified id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nexus_audit.catalog import Control, Framework
from nexus_audit.entry import format_time

__all__ = [
    "NEXUS_NAMESPACE",
    "OSCAL_VERSION",
    "ControlEvidence",
    "assessment_results",
    "control_token",
    "framework_props",
]

OSCAL_VERSION = "1.1.2"
NEXUS_NAMESPACE = "https://nexus.ai/ns/oscal/audit"
"""Namespace of the ``props`` this document adds (OSCAL requires one for non-core names)."""

_OSCAL_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")


def control_token(control: Control) -> str:
    """The control's id as an OSCAL token: itself when it is one (``CC6.1``, ``A.6.2.8``,
    ``Art.12``), else with ``(x)`` written ``.x`` and the framework key before it when
    it starts with a digit: ``164.312(a)(2)(i)`` is ``hipaa-164.312.a.2.i``,
    ``10.2.1`` is ``pci-10.2.1``. Distinct ids of one framework stay distinct."""
    if _OSCAL_TOKEN.fullmatch(control.id):
        return control.id
    token = control.id.replace("(", ".").replace(")", "")
    if not token[:1].isalpha():
        token = f"{control.framework.lower()}-{token}"
    if not _OSCAL_TOKEN.fullmatch(token):
        raise ValueError(f"{control.qualified_id} has no OSCAL token form")
    return token


def framework_props(framework: Framework) -> list[dict[str, str]]:
    """Props naming ``framework``: its key, name and edition."""
    return [
        _prop("framework", framework.key),
        _prop("framework-name", framework.name),
        _prop("framework-edition", framework.edition),
    ]


@dataclass(frozen=True)
class ControlEvidence:
    """What the export found for one control."""

    control: Control
    records: int
    allowed: int
    denied: int
    events: int


def assessment_results(
    *,
    framework: Framework,
    evidence: Sequence[ControlEvidence],
    since: datetime,
    until: datetime,
    generated: datetime,
    origin: str,
    log_size: int,
    evidence_files: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The ``{"assessment-results": ...}`` document.

    ``evidence_files`` are (href, description) pairs naming the archive's
    files that back every observation.
    """
    plan = str(uuid.uuid4())
    observations = []
    findings = []
    for item in evidence:
        observation_id = str(uuid.uuid4())
        qualified = item.control.qualified_id
        observations.append(
            {
                "uuid": observation_id,
                "title": f"Audit-log evidence for {qualified}",
                "description": (
                    f"The Merkle audit log {origin} holds {item.records} record(s) evidencing "
                    f"{qualified} ({item.control.title}) between {format_time(since)} and "
                    f"{format_time(until)}: {item.allowed} decision(s) allowed, {item.denied} "
                    f"denied, {item.events} control-plane or audit event(s). Each record "
                    "has an inclusion proof against the signed checkpoint in the archive."
                ),
                "props": [
                    _prop("control", qualified),
                    _prop("records", item.records),
                    _prop("decisions-allowed", item.allowed),
                    _prop("decisions-denied", item.denied),
                    _prop("events", item.events),
                ],
                "methods": ["TEST"],
                "types": ["control-objective"],
                "relevant-evidence": [
                    {"href": href, "description": description}
                    for href, description in evidence_files
                ],
                "collected": format_time(generated),
            }
        )
        satisfied = item.records > 0
        findings.append(
            {
                "uuid": str(uuid.uuid4()),
                "title": f"{qualified}: {item.control.title}",
                "description": (
                    f"Evidence that {qualified} operated in the period: "
                    + (
                        f"{item.records} logged record(s)."
                        if satisfied
                        else "none; the log holds no record for this control in the period."
                    )
                ),
                "props": [_prop("control", qualified)],
                "target": {
                    "type": "objective-id",
                    "target-id": control_token(item.control),
                    "status": {
                        "state": "satisfied" if satisfied else "not-satisfied",
                        "reason": "pass" if satisfied else "fail",
                    },
                },
                "related-observations": [{"observation-uuid": observation_id}],
            }
        )
    result: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "title": f"{framework.name}: evidence from the NexusAI audit log",
        "description": (
            f"Policy decisions and control-plane events recorded in the audit log {origin} "
            f"(tree size {log_size} when exported), mapped to {framework.name} "
            f"({framework.edition}) controls."
        ),
        "start": format_time(since),
        "end": format_time(until),
        "props": [
            *framework_props(framework),
            _prop("log-origin", origin),
            _prop("log-size", log_size),
        ],
        "reviewed-controls": {
            "description": f"{framework.name} ({framework.edition}) controls.",
            "control-selections": [
                {
                    "include-controls": [
                        {"control-id": control_token(item.control)} for item in evidence
                    ]
                }
            ],
        },
        "observations": observations,
        "findings": findings,
    }
    return {
        "assessment-results": {
            "uuid": str(uuid.uuid4()),
            "metadata": {
                "title": f"{framework.name} evidence export",
                "last-modified": format_time(generated),
                "version": "1",
                "oscal-version": OSCAL_VERSION,
                "props": framework_props(framework),
            },
            "import-ap": {"href": f"#{plan}"},
            "results": [result],
            "back-matter": {
                "resources": [
                    {
                        "uuid": plan,
                        "title": "Continuous control monitoring by the NexusAI audit log",
                        "description": (
                            "No separate assessment plan: every policy decision and "
                            "control-plane change is appended to a verifiable Merkle log, tagged "
                            "with the control IDs it evidences, and exported with proofs."
                        ),
                        "rlinks": [{"href": "controls.json"}],
                    }
                ]
            },
        }
    }


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": name, "ns": NEXUS_NAMESPACE, "value": str(value)}
