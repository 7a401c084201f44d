"""Decision search: the indexer follows the log, and every filter finds what it names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_audit.events import ControlEvent
from nexus_audit.intake import DecisionEvent
from nexus_audit.search import DecisionQuery, InvalidQueryError, tool_of
from nexus_audit.service import AuditLog
from tests.unit.audit.opa_events import T0, decision_event


def _append(log: AuditLog, *events: dict[str, object]) -> None:
    log.append_decisions([DecisionEvent.model_validate(e) for e in events])


def _ids(log: AuditLog, **filters: object) -> list[str]:
    return [hit.decision_id for hit in log.search_decisions(DecisionQuery(**filters)).hits]  # type: ignore[arg-type]


@pytest.fixture
def seeded(audit_log: AuditLog) -> AuditLog:
    _append(
        audit_log,
        decision_event(decision_id="d-acme-deny", tenant="acme", allowed=False),
        decision_event(
            decision_id="d-acme-tool",
            tenant="acme",
            allowed=True,
            path="/v1/tools/web-search:invoke",
            time=T0 + timedelta(hours=1),
        ),
        decision_event(
            decision_id="d-hooli",
            tenant="hooli",
            allowed=True,
            controls=("GDPR:Art.17",),
            time=T0 + timedelta(days=2),
        ),
    )
    audit_log.append_events(
        [
            ControlEvent(
                id=1,
                type="rollout.approved",
                actor="bob",
                created_at=T0 + timedelta(hours=3),
                payload={"rollout": 1},
            )
        ]
    )
    while audit_log.index_decisions():
        pass
    return audit_log


def test_the_indexer_follows_the_log_and_stops_at_its_end(audit_log: AuditLog) -> None:
    _append(audit_log, decision_event(decision_id="first"))
    assert audit_log.index_decisions() == 1
    assert audit_log.index_decisions() == 0
    _append(audit_log, decision_event(decision_id="second"))
    assert audit_log.search_decisions(DecisionQuery()).indexed_size == 1
    assert audit_log.index_decisions() == 1
    assert _ids(audit_log) == ["second", "first"]


def test_each_filter_finds_what_it_names(seeded: AuditLog) -> None:
    assert _ids(seeded) == ["d-hooli", "d-acme-tool", "d-acme-deny"]
    assert _ids(seeded, tenant="acme") == ["d-acme-tool", "d-acme-deny"]
    assert _ids(seeded, allowed=False) == ["d-acme-deny"]
    assert _ids(seeded, route="/v1/tools/web-search:invoke") == ["d-acme-tool"]
    assert _ids(seeded, tool="web-search") == ["d-acme-tool"]
    assert _ids(seeded, rule="nexus.rbac.permission_denied") == ["d-acme-deny"]
    assert _ids(seeded, control="GDPR:Art.17") == ["d-hooli"]
    assert _ids(seeded, since=T0 + timedelta(days=1)) == ["d-hooli"]
    assert _ids(seeded, until=T0 + timedelta(minutes=30)) == ["d-acme-deny"]
    assert _ids(seeded, decision_id="d-acme-tool") == ["d-acme-tool"]
    assert _ids(seeded, decision_id="d-acme-tool", tenant="hooli") == []
    assert _ids(seeded, decision_id="nowhere") == []


def test_pages_are_cut_by_leaf_index(seeded: AuditLog) -> None:
    first = seeded.search_decisions(DecisionQuery(limit=2))
    assert [h.decision_id for h in first.hits] == ["d-hooli", "d-acme-tool"]
    assert first.next_before is not None
    rest = seeded.search_decisions(DecisionQuery(limit=2, before=first.next_before))
    assert [h.decision_id for h in rest.hits] == ["d-acme-deny"]
    assert rest.next_before is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (DecisionQuery(control="SOC2:NOPE"), "unknown control"),
        (DecisionQuery(control="CC6.1"), "unknown control"),
        (DecisionQuery(since=T0, until=T0), "period is empty"),
        (DecisionQuery(limit=0), "limit"),
        (DecisionQuery(tenant=""), "tenant"),
    ],
)
def test_malformed_filters_are_refused(
    seeded: AuditLog, query: DecisionQuery, message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        seeded.search_decisions(query)


def test_evidence_per_control_counts_decisions_and_events_by_day(seeded: AuditLog) -> None:
    day = datetime(2026, 11, 2, tzinfo=UTC)
    counts = seeded.evidence_counts("SOC2:", day, day + timedelta(days=1))
    assert counts["SOC2:CC6.1"].allowed == 1
    assert counts["SOC2:CC6.1"].denied == 1
    assert counts["SOC2:CC8.1"].events == 1
    events = seeded.evidence_events("SOC2:CC8.1", day, day + timedelta(days=1))
    assert [entry["type"] for _, entry in events] == ["rollout.approved"]
    breakdown = seeded.evidence_breakdown("SOC2:CC6.1", day, day + timedelta(days=1))
    assert breakdown.sample == 2
    assert breakdown.tenants == (("acme", 1, 1),)
    assert breakdown.tools == (("web-search", 1, 0),)


def test_a_decision_record_carries_its_payload_and_a_proof_that_verifies(seeded: AuditLog) -> None:
    record = seeded.decision_record("d-acme-deny")
    assert record.hit.tenant == "acme"
    assert record.reasons[0]["rule"] == "nexus.rbac.permission_denied"
    checkpoint = record.proof.verify(seeded.verifier, leaf=record.entry)
    latest = seeded.latest_checkpoint()
    assert latest is not None
    assert checkpoint.size == latest.size > record.hit.index


def test_tools_come_from_the_tool_route() -> None:
    assert tool_of("/v1/tools/sql-exec:invoke") == "sql-exec"
    assert tool_of("/v1/chat/completions") is None
