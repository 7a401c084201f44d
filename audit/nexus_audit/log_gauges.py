"""Gauges of the log's own state, read at scrape time: its size, its latest checkpoint, and
the control plane's outbox behind it.

Each is one indexed read (the sequencer row, the newest checkpoint's size and time, a
count of undelivered outbox rows), so a scrape stays cheap however large the log grows.
The checkpoint is read as stored, not opened with the log key: a gauge is no proof.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from nexus_audit import storage
from nexus_audit.database import AuditDatabase
from nexus_audit.tables import CheckpointRow

__all__ = ["LogGauges", "OutboxPending"]

OutboxPending = Callable[[], int]
"""How many control-plane outbox events wait to be appended (the host's outbox)."""


class LogGauges(Collector):
    def __init__(
        self,
        db: AuditDatabase,
        clock_s: Callable[[], float],
        outbox_pending: OutboxPending | None = None,
    ) -> None:
        """``clock_s``: now as Unix seconds (the log's clock); ``outbox_pending``: None when
        no outbox drains into this log (a stand-alone audit service): 0 pending."""
        self._db = db
        self._clock_s = clock_s
        self._outbox_pending = outbox_pending

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._db.session() as session:
            size = storage.tree_size(session)
            latest = session.execute(
                select(CheckpointRow.size, CheckpointRow.created_at)
                .order_by(CheckpointRow.size.desc())
                .limit(1)
            ).first()
        yield GaugeMetricFamily("nexus_audit_tree_size", "Leaves in the log", value=size)
        covered, age = 0, 0.0
        if latest is not None:
            covered = latest.size
            signed_at = storage.as_utc(latest.created_at).timestamp()
            age = max(0.0, self._clock_s() - signed_at)
        yield GaugeMetricFamily(
            "nexus_audit_checkpoint_size",
            "Leaves covered by the latest signed checkpoint (0 before the first)",
            value=covered,
        )
        yield GaugeMetricFamily(
            "nexus_audit_checkpoint_age_seconds",
            "Seconds since the latest checkpoint was signed (0 before the first); an idle log "
            "signs none, so compare tree and checkpoint size before calling it stale",
            value=round(age, 3),
        )
        pending = self._outbox_pending() if self._outbox_pending is not None else 0
        yield GaugeMetricFamily(
            "nexus_audit_outbox_pending",
            "Control-plane outbox events not yet appended to the log",
            value=pending,
        )
