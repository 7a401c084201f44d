"""Spend anomalies become audit events: each finding once, as ``spend.anomaly``.

Every `SCAN_S` the watch reads the period's overview (the detector's findings for the
platform and the period's biggest spenders, `nexus_control.budgets.overview`) and records
each finding not recorded before, in one transaction; the outbox carries it into the
audit log, where its controls (monitoring: SOC 2 CC7.2, ISO 27001 A.8.16) tag it. A
finding is the same finding on every later scan (the detector is a function of the
series), so it is keyed by tenant, day (or hour), kind, and the model or feature whose
series it was (`Anomaly.key`). The metric and its alert
(`nexus_spend_anomalies`, NexusSpendAnomaly) read the same overview. A new finding for a
tenant whose budget names an ``onAnomaly`` action holds the tenant's anomaly in the same
transaction (`nexus_control.budgets.holds`), and the state bundle is republished at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets import holds
from nexus_control.budgets.overview import Anomaly, SpendOverview
from nexus_control.budgets.spend import period_of
from nexus_control.store import outbox
from nexus_control.store.tables import OutboxEvent
from nexus_runtime.database import Database

__all__ = ["ACTOR", "EVENT", "RECENT_EVENTS", "SCAN_S", "AnomalyWatch"]

EVENT = "spend.anomaly"
ACTOR = "spend-anomaly-detector"
SCAN_S = 300.0
RECENT_EVENTS = 10_000
"""Findings compared against: a period holds at most 21 scopes x 31 days x 2 kinds."""

log = logging.getLogger(__name__)


class AnomalyWatch:
    """``overview(period)`` is the budgets' overview (caps in force, spend, findings);
    ``config()`` the policy in force (None: none), whose tenants' ``onAnomaly`` actions a
    finding holds; ``republish()`` rebuilds the state bundle once a hold opened."""

    def __init__(
        self,
        db: Database,
        overview: Callable[[str], SpendOverview],
        config: Callable[[], CompiledConfig | None] = lambda: None,
        republish: Callable[[], object] = lambda: None,
    ) -> None:
        self.db = db
        self._overview = overview
        self._config = config
        self._republish = republish

    def scan(self, now: datetime | None = None) -> list[Anomaly]:
        """Record the period's findings not yet recorded; the ones recorded now."""
        moment = now or datetime.now(UTC)
        period = period_of(moment)
        found = self._overview(period).anomalies
        if not found:
            return []
        config = self._config()
        tenants = config["tenants"] if config is not None else {}
        held = False
        with self.db.session() as session:
            recorded = session.scalars(
                select(OutboxEvent.payload)
                .where(OutboxEvent.event_type == EVENT)
                .order_by(OutboxEvent.id.desc())
                .limit(RECENT_EVENTS)
            )
            seen = {_recorded_key(p) for p in recorded}
            new = [a for a in found if a.key not in seen]
            for anomaly in sorted(new, key=lambda a: a.key):
                dimensions = {
                    name: value
                    for name, value in (
                        ("model", anomaly.model),
                        ("feature", anomaly.feature),
                        ("hour", anomaly.hour),
                    )
                    if value is not None
                }
                outbox.record(
                    session,
                    EVENT,
                    ACTOR,
                    tenant=anomaly.tenant,
                    day=anomaly.day,
                    kind=anomaly.kind,
                    scope=anomaly.scope,
                    spend_usd=anomaly.spend_usd,
                    baseline_usd=anomaly.baseline_usd,
                    **dimensions,
                )
                tenant = tenants.get(anomaly.tenant)
                action = tenant["budget"].get("on_anomaly") if tenant is not None else None
                if action is not None:
                    held |= holds.hold(
                        session,
                        tenant=anomaly.tenant,
                        day=anomaly.day,
                        kind=anomaly.kind,
                        action=action,
                        actor=ACTOR,
                    )
        if held:
            self._republish()
        return new

    async def run(self, stop: asyncio.Event, every_s: float = SCAN_S) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.scan)
            except Exception:
                log.exception("spend anomaly scan failed; the next scan retries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


def _recorded_key(payload: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """`Anomaly.key` of a recorded ``spend.anomaly`` event."""
    return (
        str(payload.get("tenant")),
        str(payload.get("hour") or payload.get("day")),
        str(payload.get("kind")),
        str(payload.get("model") or ""),
        str(payload.get("feature") or ""),
    )
