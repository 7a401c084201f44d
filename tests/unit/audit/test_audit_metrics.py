"""The audit service's metrics as Prometheus reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from nexus_audit.events import ControlEvent
from nexus_audit.log_gauges import LogGauges
from nexus_audit.metrics import AuditCollector, AuditMetrics
from nexus_audit.service import AuditLog
from tests.unit.audit.harness import Clock


def _exposition(metrics: AuditMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(AuditCollector(metrics))
    return generate_latest(registry).decode()


def test_alerted_counters_exist_at_zero_before_their_first_event() -> None:
    """A counter born at 1 shows Prometheus no increase: the first event would not alert."""
    text = _exposition(AuditMetrics())
    assert 'nexus_audit_security_events_total{kind="decision_conflict"} 0.0' in text
    assert 'nexus_audit_security_events_total{kind="enforcer_mismatch"} 0.0' in text
    assert 'nexus_audit_uploads_refused_total{reason="busy"} 0.0' in text


def test_counts_add_to_the_known_label_values_and_new_ones() -> None:
    metrics = AuditMetrics()
    metrics.count("security_events", "decision_conflict", 2)
    metrics.count("uploads_refused", "invalid_event")
    text = _exposition(metrics)
    assert 'nexus_audit_security_events_total{kind="decision_conflict"} 2.0' in text
    assert 'nexus_audit_security_events_total{kind="enforcer_mismatch"} 0.0' in text
    assert 'nexus_audit_uploads_refused_total{reason="invalid_event"} 1.0' in text


def _log_gauges(log: AuditLog) -> dict[str, float]:
    collector = LogGauges(log.db, lambda: log.now().timestamp(), log.outbox_pending)
    return {family.name: family.samples[0].value for family in collector.collect()}


def _event(n: int) -> ControlEvent:
    return ControlEvent(
        id=n,
        type="bundle.published",
        actor="alice@nexus.example",
        created_at=datetime(2026, 11, 25, 11, 0, tzinfo=UTC),
        payload={"bundle": "gateway", "revision": f"r{n}"},
    )


def test_log_gauges_follow_the_tree_its_latest_checkpoint_and_the_outbox(
    audit_log: AuditLog, clock: Clock
) -> None:
    empty = _log_gauges(audit_log)
    assert empty == {
        "nexus_audit_tree_size": 0,
        "nexus_audit_checkpoint_size": 0,
        "nexus_audit_checkpoint_age_seconds": 0,
        "nexus_audit_outbox_pending": 0,
    }
    # The first append is signed at once (no checkpoint yet); the next ones wait for the
    # leaf or time rule (1000 leaves, an hour).
    audit_log.append_events([_event(1)])
    audit_log.append_events([_event(2), _event(3)])
    clock.advance(120)
    pending = [7]
    audit_log.use_outbox(lambda: pending[0])
    grown = _log_gauges(audit_log)
    assert grown["nexus_audit_tree_size"] == 3
    assert grown["nexus_audit_checkpoint_size"] == 1
    assert grown["nexus_audit_checkpoint_age_seconds"] == 120
    assert grown["nexus_audit_outbox_pending"] == 7

    audit_log.checkpoint()
    pending[0] = 0
    signed = _log_gauges(audit_log)
    assert signed["nexus_audit_checkpoint_size"] == 3
    assert signed["nexus_audit_checkpoint_age_seconds"] == 0
    assert signed["nexus_audit_outbox_pending"] == 0
