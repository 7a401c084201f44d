"""Coverage: every control of a framework, with its evidence in a half-open period."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nexus_audit.coverage import UnknownFrameworkError, coverage
from nexus_audit.events import ControlEvent
from nexus_audit.service import AuditLog
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch

DAY = timedelta(days=1)


@pytest.fixture
def logged(audit_log: AuditLog) -> AuditLog:
    batch = [
        decision_event(time=T0, allowed=True, rule_labels=("SOC2:CC6.1", "ISO27001:A.5.15")),
        decision_event(time=T0 + timedelta(hours=1), controls=("SOC2:CC6.1", "SOC2:CC6.6")),
        decision_event(time=T0 + timedelta(hours=2), controls=("SOC2:CC6.1",)),
        decision_event(time=T0 - timedelta(seconds=1), controls=("SOC2:CC7.2",)),
        decision_event(time=T0 + DAY, controls=("SOC2:CC7.2",)),
    ]
    audit_log.ingest_upload(gzip_batch(batch), "gzip")
    audit_log.append_events(
        [ControlEvent(id=3, type="bundle.published", actor="a", created_at=T0 + timedelta(hours=3))]
    )
    return audit_log


def test_coverage_counts_decisions_and_events_per_control(logged: AuditLog) -> None:
    report = coverage(logged, "soc2", T0, T0 + DAY)
    rows = {row.control.id: row for row in report.controls}

    assert len(report.controls) == 61
    assert (rows["CC6.1"].decisions, rows["CC6.1"].allowed, rows["CC6.1"].denied) == (3, 1, 2)
    assert (rows["CC6.6"].allowed, rows["CC6.6"].denied) == (0, 1)
    assert (rows["CC8.1"].decisions, rows["CC8.1"].events) == (0, 1)
    assert rows["CC7.2"].decisions == 0, "the period is [since, until)"
    assert "SOC2:CC7.2" in report.without_evidence
    assert "SOC2:CC6.1" not in report.without_evidence
    assert len(report.without_evidence) == 61 - 3


def test_coverage_is_machine_readable(logged: AuditLog) -> None:
    document = coverage(logged, "ISO27001", T0, T0 + DAY).as_dict()

    assert document["framework"]["key"] == "ISO27001"
    assert document["period"] == {
        "since": "2026-11-02T09:00:00.000000Z",
        "until": "2026-11-03T09:00:00.000000Z",
    }
    assert document["summary"]["controls"] == 93
    assert document["summary"]["with_evidence"] == 2  # A.5.15 and A.8.32
    a_5_15 = next(c for c in document["controls"] if c["id"] == "A.5.15")
    assert a_5_15 == {
        "id": "A.5.15",
        "qualified_id": "ISO27001:A.5.15",
        "group": "Organizational",
        "title": a_5_15["title"],
        "decisions": 1,
        "allowed": 1,
        "denied": 0,
        "events": 0,
    }


def test_an_unknown_framework_or_an_empty_period_is_refused(logged: AuditLog) -> None:
    with pytest.raises(
        UnknownFrameworkError, match="soc2, iso27001, gdpr, hipaa, pci, euaiact, iso42001"
    ):
        coverage(logged, "nist80053", T0, T0 + DAY)
    with pytest.raises(ValueError, match="empty"):
        coverage(logged, "gdpr", T0, T0)
