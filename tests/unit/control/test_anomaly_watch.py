"""Spend findings become audit events once each: recorded by the scan that first sees them,
never again by later scans, tagged with monitoring controls."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from nexus_audit.events import controls_for
from nexus_control.budgets.overview import SpendOverview, spend_overview
from nexus_control.budgets.spend import InProcessSpendStore, Usage
from nexus_control.budgets.watch import ACTOR, EVENT, AnomalyWatch
from nexus_control.store import outbox
from nexus_runtime.database import Database


def _spend(store: InProcessSpendStore, day: date, usd: float) -> None:
    iso = day.isoformat()
    store.record(Usage(f"req-{iso}", "acme", "gpt-4o", None, 1, usd, iso[:7], iso))


def test_a_spike_is_recorded_once_for_the_tenant_and_the_platform(db: Database) -> None:
    store = InProcessSpendStore()
    day = date(2027, 2, 1)
    while day < date(2027, 3, 10):
        _spend(store, day, 10.0)
        day += timedelta(days=1)
    _spend(store, date(2027, 3, 10), 100.0)

    def overview(period: str) -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, None, period)

    watch = AnomalyWatch(db, overview)
    now = datetime(2027, 3, 10, 18, tzinfo=UTC)
    found = watch.scan(now)
    assert {(a.tenant, a.day, a.kind) for a in found} == {
        ("*", "2027-03-10", "spike"),
        ("acme", "2027-03-10", "spike"),
    }
    assert watch.scan(now) == [], "a later scan finds them again and records nothing"
    with db.session() as session:
        events = outbox.events(session, EVENT)
    assert [e.payload["tenant"] for e in events] == ["*", "acme"]
    (event,) = [e for e in events if e.payload["tenant"] == "acme"]
    assert event.actor == ACTOR
    assert event.payload == {
        "tenant": "acme",
        "day": "2027-03-10",
        "kind": "spike",
        "scope": "tenant",
        "spend_usd": 100.0,
        "baseline_usd": pytest.approx(10.0, rel=0.01),
    }
    assert set(controls_for(EVENT)) == {"SOC2:CC7.2", "ISO27001:A.8.16"}


def test_a_quiet_period_records_nothing(db: Database) -> None:
    store = InProcessSpendStore()
    for n in range(20):
        _spend(store, date(2027, 3, 1) + timedelta(days=n), 10.0)

    def overview(period: str) -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, None, period)

    assert AnomalyWatch(db, overview).scan(datetime(2027, 3, 20, tzinfo=UTC)) == []
    with db.session() as session:
        assert outbox.events(session, EVENT) == []
