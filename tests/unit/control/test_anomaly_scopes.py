"""Spend anomalies below the tenant's total: per model, per feature, and per hour."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta

from nexus_control.budgets.anomaly import MIN_HISTORY_HOURS, WINDOW_HOURS, detect_hourly
from nexus_control.budgets.overview import SpendOverview, spend_overview
from nexus_control.budgets.spend import InProcessSpendStore, Usage
from nexus_control.budgets.watch import EVENT, AnomalyWatch
from nexus_control.store import outbox
from nexus_runtime.database import Database

START = datetime(2026, 11, 2, tzinfo=UTC)


def _working_day(hours: int, *, seed: int = 1) -> list[tuple[datetime, float]]:
    """Hourly spend that follows a working day: ~10 USD an hour 9-18 UTC, ~1 at night."""
    rng = random.Random(seed)
    series = []
    for i in range(hours):
        hour = START + timedelta(hours=i)
        level = 10.0 if 9 <= hour.hour < 18 else 1.0
        series.append((hour, level * math.exp(rng.gauss(0, 0.15))))
    return series


def test_a_working_day_rhythm_is_no_hourly_finding() -> None:
    assert detect_hourly(_working_day(WINDOW_HOURS * 3)) == []


def test_a_night_hour_spending_like_an_afternoon_is_a_spike_judged_against_nights() -> None:
    series = _working_day(WINDOW_HOURS * 2)
    night = next(i for i in range(WINDOW_HOURS, len(series)) if series[i][0].hour == 3)
    series[night] = (series[night][0], 12.0)  # an afternoon's spend at 3 a.m.
    (finding,) = detect_hourly(series)
    assert finding.hour == series[night][0]
    assert 0.5 < finding.baseline_usd < 2.0, "the baseline is a night's, not the day's median"
    assert finding.spend_usd == 12.0


def test_an_afternoon_spending_like_an_afternoon_is_nothing_and_early_hours_are_not_judged() -> (
    None
):
    series = _working_day(WINDOW_HOURS * 2)
    assert detect_hourly(series, last=24) == []
    starting = [(hour, 0.0) for hour, _ in _working_day(30)] + _working_day(MIN_HISTORY_HOURS)
    starting[-1] = (starting[-1][0], 500.0)
    assert detect_hourly(starting) == [], "a tenant's first week of hours sets no baseline"


def _record_days(store: InProcessSpendStore, tenant: str, model: str, daily: list[float]) -> None:
    for offset, usd in enumerate(daily):
        day = date(2027, 2, 1) + timedelta(days=offset)
        iso = day.isoformat()
        store.record(Usage(f"{tenant}-{model}-{iso}", tenant, model, "chat", 1, usd, iso[:7], iso))


def _overview(db: Database, store: InProcessSpendStore, period: str) -> SpendOverview:
    with db.session() as session:
        return spend_overview(session, store, None, period)


def test_a_model_spiking_inside_a_steady_total_is_a_finding_of_that_model_only(
    db: Database,
) -> None:
    store = InProcessSpendStore()
    days = 38  # 2027-02-01 .. 2027-03-10
    _record_days(store, "acme", "gpt-4o", [100.0] * days)
    small = [5.0] * days
    small[-1] = 60.0  # x12 on the small model; the tenant's total only x1.5
    _record_days(store, "acme", "o3", small)
    found = [a for a in _overview(db, store, "2027-03").anomalies if a.tenant == "acme"]
    assert [(a.scope, a.model, a.day, a.kind) for a in found] == [
        ("model", "o3", "2027-03-10", "spike")
    ]
    # The feature is all of acme's spend: scoring it would only repeat the tenant's series.
    assert all(a.feature is None for a in found)


def test_a_model_finding_is_recorded_once_apart_from_the_tenants(db: Database) -> None:
    store = InProcessSpendStore()
    days = 38
    big = [100.0] * days
    big[-1] = 1000.0
    _record_days(store, "acme", "gpt-4o", big)
    _record_days(store, "acme", "o3", [5.0] * days)
    watch = AnomalyWatch(db, lambda period: _overview(db, store, period))
    now = datetime(2027, 3, 10, 18, tzinfo=UTC)
    first = watch.scan(now)
    assert {(a.scope, a.model) for a in first if a.tenant == "acme"} == {
        ("tenant", None),
        ("model", "gpt-4o"),
    }
    assert watch.scan(now) == [], "each finding once, the model's apart from the tenant's"
    with db.session() as session:
        payloads = [
            e.payload for e in outbox.events(session, EVENT) if e.payload["tenant"] == "acme"
        ]
    assert sorted((p["scope"], p.get("model")) for p in payloads) == [
        ("model", "gpt-4o"),
        ("tenant", None),
    ]


def test_an_hour_spike_in_the_last_day_is_found_from_the_hourly_cells(db: Database) -> None:
    store = InProcessSpendStore()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(7)
    for back in range(1, 8 * 24):
        hour = end - timedelta(hours=back)
        usd = (10.0 if 9 <= hour.hour < 18 else 1.0) * math.exp(rng.gauss(0, 0.1))
        if back == 2:
            usd = 40.0 if 9 <= hour.hour < 18 else 15.0
        day = hour.date().isoformat()
        store.record(
            Usage(f"h-{back}", "acme", "gpt-4o", None, 1, usd, day[:7], day, hour=hour.hour)
        )
    period = (end - timedelta(hours=2)).strftime("%Y-%m")
    hourly = [a for a in _overview(db, store, period).anomalies if a.scope == "hour"]
    spiked = (end - timedelta(hours=2)).strftime("%Y-%m-%dT%H")
    assert [(a.tenant, a.hour, a.kind) for a in hourly] == [("acme", spiked, "spike")]
    assert hourly[0].day == spiked[:10]
