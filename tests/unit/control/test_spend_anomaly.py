"""The spend detector on hand-made series: what it flags, what it leaves, and why."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date, timedelta

from nexus_control.budgets.anomaly import LEVEL_DAYS, MIN_HISTORY_DAYS, detect

MONDAY = date(2026, 11, 2)


def _series(values: list[float]) -> list[tuple[date, float]]:
    return [(MONDAY + timedelta(days=i), v) for i, v in enumerate(values)]


def _weekly(days: int, *, level: float = 100.0, weekend: float = 0.4, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [
        level * (weekend if (MONDAY + timedelta(days=i)).weekday() >= 5 else 1.0)
        * math.exp(rng.gauss(0, 0.1))
        for i in range(days)
    ]  # fmt: skip


def test_a_steady_weekly_pattern_with_low_weekends_is_no_finding() -> None:
    assert detect(_series(_weekly(90))) == []


def test_a_one_day_spike_is_found_on_its_day_with_its_seasonal_baseline() -> None:
    values = _weekly(60)
    saturday = next(i for i in range(40, 60) if (MONDAY + timedelta(days=i)).weekday() == 5)
    values[saturday] = 200.0  # a weekend day normally near 40
    (finding,) = detect(_series(values))
    assert (finding.day, finding.kind) == (MONDAY + timedelta(days=saturday), "spike")
    assert 30 < finding.baseline_usd < 50, "judged against weekends, not working days"
    assert finding.spend_usd == 200.0 and finding.score > 4.5


def test_a_slow_drift_is_one_finding_not_a_week_of_them() -> None:
    values = _weekly(100, seed=3)
    for i in range(50, 100):
        values[i] *= 1 + min(1.0, (i - 49) / 14)  # to 2x over two weeks, then stays
    findings = detect(_series(values))
    drifts = [f for f in findings if f.kind == "drift"]
    assert drifts, findings
    first = drifts[0]
    assert 50 <= (first.day - MONDAY).days <= 50 + 14 + LEVEL_DAYS
    assert first.spend_usd > 1.5 * first.baseline_usd
    days = [(f.day - MONDAY).days for f in drifts]
    assert all(b - a > LEVEL_DAYS for a, b in itertools.pairwise(days))


def test_cents_never_page_anyone_and_a_new_tenant_is_not_an_anomaly() -> None:
    tiny = _weekly(60, level=0.05)
    tiny[50] = 0.6  # 12x, but under a dollar above its baseline
    assert detect(_series(tiny)) == []
    starting = [0.0] * 30 + _weekly(10)
    assert detect(_series(starting)) == [], "its first days of spend have no history"


def test_the_daily_pass_scores_the_last_day_only() -> None:
    values = _weekly(60)
    values[40] = values[59] = 1_000.0
    assert [(f.day - MONDAY).days for f in detect(_series(values))] == [40, 59]
    assert [(f.day - MONDAY).days for f in detect(_series(values), last=1)] == [59]
    assert detect(_series(values[:MIN_HISTORY_DAYS])) == []
