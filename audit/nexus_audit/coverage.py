"""Coverage: for each control of a framework, how much evidence the log holds in a period.

A leaf is evidence for the controls in its entry: a decision for those of its
reasons and rule labels, an event for those of its type
(`nexus_audit.events.EVENT_CONTROLS`). Periods are half-open, ``[since, until)``,
on the leaf's own time (when the decision was made), not its append time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from nexus_audit.catalog import Catalogs, Control, Framework
from nexus_audit.entry import format_time
from nexus_audit.service import AuditLog
from nexus_audit.tables import LeafControl
from nexus_contract.errors import NexusError

__all__ = [
    "ControlCoverage",
    "CoverageReport",
    "UnknownFrameworkError",
    "coverage",
    "framework_of",
]


class UnknownFrameworkError(NexusError, LookupError):
    """A framework name is not one of the catalogs'."""


@dataclass(frozen=True)
class ControlCoverage:
    """Evidence for one control: decisions (allowed + denied) and events."""

    control: Control
    allowed: int = 0
    denied: int = 0
    events: int = 0

    @property
    def decisions(self) -> int:
        return self.allowed + self.denied

    @property
    def evidenced(self) -> bool:
        return self.decisions + self.events > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.control.id,
            "qualified_id": self.control.qualified_id,
            "group": self.control.group,
            "title": self.control.title,
            "decisions": self.decisions,
            "allowed": self.allowed,
            "denied": self.denied,
            "events": self.events,
        }


@dataclass(frozen=True)
class CoverageReport:
    """Every control of one framework, in catalog order, with its evidence in the period."""

    framework: Framework
    since: datetime
    until: datetime
    controls: tuple[ControlCoverage, ...]

    @property
    def without_evidence(self) -> tuple[str, ...]:
        return tuple(c.control.qualified_id for c in self.controls if not c.evidenced)

    def as_dict(self) -> dict[str, Any]:
        evidenced = sum(1 for c in self.controls if c.evidenced)
        return {
            "framework": {
                "key": self.framework.key,
                "name": self.framework.name,
                "edition": self.framework.edition,
            },
            "period": {"since": format_time(self.since), "until": format_time(self.until)},
            "summary": {
                "controls": len(self.controls),
                "with_evidence": evidenced,
                "without_evidence": len(self.controls) - evidenced,
                "decisions": sum(c.decisions for c in self.controls),
            },
            "controls": [c.as_dict() for c in self.controls],
            "without_evidence": list(self.without_evidence),
        }


def framework_of(catalogs: Catalogs, name: str) -> Framework:
    """The framework named ``name`` in any case: ``soc2``, ``SOC2``, ``hipaa``, ``euaiact``…"""
    framework = catalogs.frameworks.get(name.upper())
    if framework is None:
        known = ", ".join(key.lower() for key in catalogs.frameworks)
        raise UnknownFrameworkError(f"unknown framework {name!r}; expected one of {known}")
    return framework


def coverage(log: AuditLog, framework: str, since: datetime, until: datetime) -> CoverageReport:
    """Count, per control of ``framework``, the leaves evidencing it in ``[since, until)``."""
    found = framework_of(log.catalogs, framework)
    if until <= since:
        raise ValueError("the period is empty: until must be after since")
    query = (
        select(LeafControl.control, LeafControl.kind, LeafControl.allowed, func.count())
        .where(
            LeafControl.control.startswith(f"{found.key}:"),
            LeafControl.time >= since.astimezone(UTC),
            LeafControl.time < until.astimezone(UTC),
        )
        .group_by(LeafControl.control, LeafControl.kind, LeafControl.allowed)
    )
    counts: dict[str, dict[str, int]] = {}
    with log.db.session() as session:
        for control, kind, allowed, count in session.execute(query).tuples():
            bucket = counts.setdefault(control, {"allowed": 0, "denied": 0, "events": 0})
            if kind == "event":
                bucket["events"] += count
            elif allowed:
                bucket["allowed"] += count
            else:
                bucket["denied"] += count
    rows = tuple(
        ControlCoverage(control, **counts.get(control.qualified_id, {}))
        for control in found.controls.values()
    )
    return CoverageReport(found, since.astimezone(UTC), until.astimezone(UTC), rows)
