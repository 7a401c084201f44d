"""The audit service's counters, and a Prometheus collector for them.

Counters live in the `AuditLog` (one per process) and are read at scrape
time. Security events (a conflicting decision id, an enforcer speaking for
another, a decision time outside the window) are counted here *and*
appended to the log as leaves, so an alert and the record agree.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "DECISION_CONFLICT",
    "ENFORCER_MISMATCH",
    "RECEIPT_FORGED",
    "REFUSED_BUSY",
    "SHADOW_FORGED",
    "AuditCollector",
    "AuditMetrics",
]

DECISION_CONFLICT = "decision_conflict"
"""Security-event kind: a decision id sent again with other content."""
ENFORCER_MISMATCH = "enforcer_mismatch"
"""Security-event kind: an upload whose credential, labels and header name other enforcers."""
RECEIPT_FORGED = "receipt_forged"
"""Security-event kind: a delivery receipt for a decision its sender did not make."""
SHADOW_FORGED = "shadow_forged"
"""Security-event kind: a shadow outcome for a decision its sender did not make."""
REFUSED_BUSY = "busy"
"""Upload refusal reason: too many uploads in flight (429)."""


class AuditMetrics:
    """Thread-safe counters keyed by (name, label value)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._gauges: dict[str, float] = {}

    def count(self, name: str, label: str = "", amount: int = 1) -> None:
        with self._lock:
            self._counts[(name, label)] += amount

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def get(self, name: str, label: str = "") -> int:
        with self._lock:
            return self._counts[(name, label)]

    def gauge(self, name: str) -> float:
        with self._lock:
            return self._gauges.get(name, 0.0)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
        with self._lock:
            return dict(self._counts), dict(self._gauges)


_COUNTERS = {
    "security_events": ("nexus_audit_security_events", "Security events logged, by kind", "kind"),
    "uploads_refused": ("nexus_audit_uploads_refused", "Decision-log uploads refused", "reason"),
    "decisions_flagged": ("nexus_audit_decisions_flagged", "Decisions stored flagged", "flag"),
    "dead_letters": ("nexus_audit_dead_letters", "Outbox events dead-lettered", "type"),
    "receipts_skipped": (
        "nexus_audit_receipts_skipped",
        "Delivery receipts skipped: their decision is not in the log",
        "reason",
    ),
    "shadows_skipped": (
        "nexus_audit_shadows_skipped",
        "Shadow outcomes skipped: their decision is not in the log",
        "reason",
    ),
    "cosignatures": ("nexus_audit_cosignatures", "Cosignatures collected", "witness"),
    "witness_failures": ("nexus_audit_witness_failures", "Witness submissions failed", "witness"),
}
_KNOWN_LABELS = {
    "security_events": (DECISION_CONFLICT, ENFORCER_MISMATCH, RECEIPT_FORGED, SHADOW_FORGED),
    "uploads_refused": (REFUSED_BUSY,),
}
"""Label values exported at 0 before their first count: a counter that appears already at 1
shows Prometheus no increase, and an alert on ``increase(...)`` would miss the first event."""
_GAUGES = {
    "chain_broken": "1 while the tree does not extend the last signed checkpoint",
    "quorum_missed": "1 while the latest checkpoint lacks its witness quorum",
    "uploads_in_flight": "Decision-log uploads being processed",
    "signer_leader": "1 while this process signs checkpoints (PostgreSQL: holds the lease)",
}


class AuditCollector(Collector):
    def __init__(self, metrics: AuditMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts, gauges = self.metrics.snapshot()
        for key, (name, help_text, label) in _COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=[label])
            values = dict.fromkeys(_KNOWN_LABELS.get(key, ()), 0)
            for (counter, value_label), value in counts.items():
                if counter == key:
                    values[value_label] = value
            for value_label, value in sorted(values.items()):
                family.add_metric([value_label], value)
            yield family
        for key, help_text in _GAUGES.items():
            yield GaugeMetricFamily(f"nexus_audit_{key}", help_text, value=gauges.get(key, 0.0))
