"""The spend anomaly detector on synthetic series: precision, recall, false alarms, cost.

Each synthetic tenant spends a lognormal daily level (a few cents to a few hundred USD)
with a weekday profile (weekends lower, by a tenant's own factor) and multiplicative
noise (sigma 0.1-0.3 on the log scale), for 120 days. Injected: a one-day spike (x3 to x10)
in half the tenants, a slow drift (a ramp to x2-x3 over 7-21 days, then staying) in a
third, each after day 35. A spike is found if the detector flags its day; a drift if it
flags a drift or spike between its start and 14 days after its ramp ends. Precision is
flags that belong to an injected event over all flags; recall is events found over events
injected (spikes under 1 USD of excess are not counted: the detector ignores them by
design). The clean series (no injection, another seed) give false alarms per
tenant-month. Cost: one daily scoring pass (the last day of 10,000 tenants' 42-day
series), as the control plane would run it. Hourly: two weeks of hours with a working-day
profile and a one-hour spike (x4 to x12) in the second week of each injected tenant;
precision, recall and false alarms per tenant-day the same way.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from nexus_control.budgets.anomaly import (
    MIN_EXCESS_USD,
    MIN_HISTORY_DAYS,
    MIN_HISTORY_HOURS,
    detect,
    detect_hourly,
)
from tests.bench.common import Context, Figure, figure, report

NAME = "anomaly"
TITLE = "Spend anomalies: robust weekday-seasonal baseline on synthetic series"
DAYS = 120
TENANTS = 2_000
QUICK_TENANTS = 300
PASS_TENANTS = 10_000
QUICK_PASS_TENANTS = 1_000
PASS_DAYS = 42
START = date(2026, 1, 5)


@dataclass(frozen=True)
class Event:
    kind: str
    start: int
    end: int
    """Last day a finding still counts as this event's."""


def _tenant(rng: random.Random, *, inject: bool) -> tuple[list[float], list[Event]]:
    level = math.exp(rng.uniform(math.log(0.5), math.log(500)))
    weekend = rng.uniform(0.3, 0.9)
    sigma = rng.uniform(0.1, 0.3)
    multipliers = [1.0] * DAYS
    events: list[Event] = []
    if inject and rng.random() < 1 / 3:
        start, ramp, factor = rng.randrange(40, DAYS - 30), rng.randint(7, 21), rng.uniform(2, 3)
        for d in range(start, DAYS):
            multipliers[d] = 1 + (factor - 1) * min(1.0, (d - start + 1) / ramp)
        events.append(Event("drift", start, start + ramp + 14))
    series = []
    for d in range(DAYS):
        weekday = (START + timedelta(days=d)).weekday()
        seasonal = weekend if weekday >= 5 else 1.0
        series.append(level * seasonal * multipliers[d] * math.exp(rng.gauss(0, sigma)))
    if inject and rng.random() < 0.5:
        day = rng.randrange(35, DAYS)
        excess = series[day] * (rng.uniform(3, 10) - 1)
        series[day] += excess
        if excess >= MIN_EXCESS_USD:
            events.append(Event("spike", day, day))
    return series, events


def _dated(series: list[float]) -> list[tuple[date, float]]:
    return [(START + timedelta(days=d), spend) for d, spend in enumerate(series)]


def run(ctx: Context) -> list[Figure]:
    tenants = QUICK_TENANTS if ctx.quick else TENANTS
    rng = random.Random(20261203)
    flags = matched = injected = found = 0
    by_kind: dict[str, list[int]] = {"spike": [0, 0], "drift": [0, 0]}
    for _ in range(tenants):
        series, events = _tenant(rng, inject=True)
        findings = detect(_dated(series))
        days = [(f.day - START).days for f in findings]
        flags += len(days)
        matched += sum(1 for d in days if any(e.start <= d <= e.end for e in events))
        for event in events:
            injected += 1
            by_kind[event.kind][1] += 1
            if any(event.start <= d <= event.end for d in days):
                found += 1
                by_kind[event.kind][0] += 1
    clean_rng = random.Random(7)
    false_alarms = 0
    for _ in range(tenants):
        series, _ = _tenant(clean_rng, inject=False)
        false_alarms += len(detect(_dated(series)))
    scored_months = tenants * (DAYS - MIN_HISTORY_DAYS) / 30

    pass_tenants = QUICK_PASS_TENANTS if ctx.quick else PASS_TENANTS
    histories = [_dated(_tenant(rng, inject=False)[0][:PASS_DAYS]) for _ in range(pass_tenants)]
    began = time.perf_counter()
    for history in histories:
        detect(history, last=1)
    pass_s = time.perf_counter() - began

    precision = matched / flags if flags else 0.0
    recall = found / injected if injected else 0.0
    figures = [
        figure(NAME, "precision (flags on injected events)", precision, "",
               target=(">=", 0.9), note=f"{matched} of {flags} flags, {tenants} tenants, {DAYS} d"),
        figure(NAME, "recall (injected events found)", recall, "", target=(">=", 0.9),
               note=f"{found} of {injected}: spikes {by_kind['spike'][0]}/{by_kind['spike'][1]}, "
               f"drifts {by_kind['drift'][0]}/{by_kind['drift'][1]}"),
        figure(NAME, "false alarms per tenant-month (clean series)",
               round(false_alarms / scored_months, 4), "",
               note=f"{false_alarms} findings over {scored_months:.0f} tenant-months"),
        figure(NAME, f"daily pass, {pass_tenants:,} tenants", pass_s, "s",
               note=f"{PASS_DAYS}-day series each, its last day scored"),
    ]  # fmt: skip
    figures += _hourly(ctx)
    report(ctx.console, TITLE, figures)
    return figures


HOURS = 14 * 24
HOURLY_TENANTS = 500
QUICK_HOURLY_TENANTS = 100
HOUR_START = datetime(2026, 1, 5, tzinfo=UTC)


def _tenant_hours(rng: random.Random, *, inject: bool) -> tuple[list[float], int | None]:
    """An hourly series: a working-day profile (nights at a tenant's own fraction of the
    day's level), noise, and with ``inject`` a one-hour spike of x4 to x12 in the second week."""
    level = math.exp(rng.uniform(math.log(0.5), math.log(50)))
    night = rng.uniform(0.05, 0.5)
    sigma = rng.uniform(0.1, 0.3)
    series = []
    for h in range(HOURS):
        hour = (HOUR_START + timedelta(hours=h)).hour
        seasonal = 1.0 if 8 <= hour < 19 else night
        series.append(level * seasonal * math.exp(rng.gauss(0, sigma)))
    spiked = None
    if inject:
        spiked = rng.randrange(HOURS // 2, HOURS)
        excess = series[spiked] * (rng.uniform(4, 12) - 1)
        series[spiked] += excess
        if excess < MIN_EXCESS_USD:
            spiked = None
    return series, spiked


def _hourly(ctx: Context) -> list[Figure]:
    """Precision and recall of hourly spikes, and false alarms per tenant-day on clean series."""
    tenants = QUICK_HOURLY_TENANTS if ctx.quick else HOURLY_TENANTS
    rng, clean_rng = random.Random(20261207), random.Random(11)
    flags = matched = injected = found = false_alarms = 0
    for _ in range(tenants):
        series, spiked = _tenant_hours(rng, inject=True)
        hours = [
            (f.hour - HOUR_START) // timedelta(hours=1)
            for f in detect_hourly(_hourly_dated(series))
        ]
        flags += len(hours)
        matched += sum(1 for h in hours if h == spiked)
        if spiked is not None:
            injected += 1
            found += spiked in hours
        false_alarms += len(detect_hourly(_hourly_dated(_tenant_hours(clean_rng, inject=False)[0])))
    scored_days = tenants * (HOURS - MIN_HISTORY_HOURS) / 24
    return [
        figure(NAME, "hourly precision", matched / flags if flags else 0.0, "", target=(">=", 0.9),
               note=f"{matched} of {flags} flags, {tenants} tenants, {HOURS // 24} d of hours"),
        figure(NAME, "hourly recall", found / injected if injected else 0.0, "",
               target=(">=", 0.9), note=f"{found} of {injected} one-hour spikes"),
        figure(NAME, "hourly false alarms per tenant-day (clean series)",
               round(false_alarms / scored_days, 4), "",
               note=f"{false_alarms} findings over {scored_days:.0f} tenant-days"),
    ]  # fmt: skip


def _hourly_dated(series: list[float]) -> list[tuple[datetime, float]]:
    return [(HOUR_START + timedelta(hours=h), spend) for h, spend in enumerate(series)]
