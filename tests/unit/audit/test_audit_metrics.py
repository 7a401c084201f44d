"""The audit service's metrics as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from nexus_audit.metrics import AuditCollector, AuditMetrics


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
