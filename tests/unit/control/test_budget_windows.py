"""Budget windows: the arithmetic (months, ISO weeks, days and custom windows in a zone, across
daylight saving), the spec's errors at their place, and what compiles."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import TenantConfig
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.spec import MAX_WINDOW_DAYS as SPEC_MAX
from nexus_control.budgets.spend import REQUEST_ID_TTL_S
from nexus_control.budgets.window import (
    MAX_WINDOW_DAYS,
    BudgetWindow,
    WindowKind,
    WindowSpan,
    tenant_window,
)
from tests.conftest import BundleFactory

BERLIN = "Europe/Berlin"


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_month_in_berlin_starts_at_local_midnight_and_is_an_hour_short_in_march() -> None:
    window = BudgetWindow(WindowKind.MONTH, BERLIN)
    march = window.span_at(_utc(2026, 3, 15, 12))
    # 1 March 00:00 CET (UTC+1) to 1 April 00:00 CEST (UTC+2): clocks sprang on 29 March.
    assert march == WindowSpan("2026-03", _utc(2026, 2, 28, 23), _utc(2026, 3, 31, 22))
    assert march.end - march.start == timedelta(days=31, hours=-1)
    # Half past midnight in Berlin on 1 April is still 31 March in UTC: April already.
    assert window.span_at(_utc(2026, 3, 31, 22, 30)).key == "2026-04"
    assert window.span_at(_utc(2026, 3, 31, 21, 59, 59)).key == "2026-03"


def test_a_day_window_is_23_and_25_hours_long_on_the_days_clocks_change() -> None:
    window = BudgetWindow(WindowKind.DAY, BERLIN)
    spring = window.span_at(_utc(2026, 3, 29, 12))
    autumn = window.span_at(_utc(2026, 10, 25, 12))
    assert spring == WindowSpan("2026-03-29", _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22))
    assert autumn == WindowSpan("2026-10-25", _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 23))
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_where_clocks_jump_over_midnight_the_day_starts_at_the_jump() -> None:
    # Santiago springs from 00:00 to 01:00 on 6 September 2026: midnight never happens.
    window = BudgetWindow(WindowKind.DAY, "America/Santiago")
    day = window.span_at(_utc(2026, 9, 6, 12))
    assert day.key == "2026-09-06"
    assert day.start == _utc(2026, 9, 6, 4)
    assert window.span_at(day.start - timedelta(microseconds=1)).key == "2026-09-05"
    assert day.end - day.start == timedelta(hours=23)


def test_a_week_runs_monday_to_monday_in_the_zone_and_is_named_by_its_iso_week() -> None:
    window = BudgetWindow(WindowKind.WEEK, "America/New_York")
    # Sunday 8 March 2026, 23:30 in New York (EDT since 02:00 that day) is Monday in UTC.
    sunday_night = _utc(2026, 3, 9, 3, 30)
    week = window.span_at(sunday_night)
    assert week.key == "2026-W10"
    assert week.start == _utc(2026, 3, 2, 5)  # Monday 2 March, 00:00 EST
    assert week.end == _utc(2026, 3, 9, 4)  # Monday 9 March, 00:00 EDT
    assert window.span_at(week.end).key == "2026-W11"
    # The ISO year: the week of Thursday 31 December 2026 is 2026's 53rd, into 2027.
    assert BudgetWindow(WindowKind.WEEK).span_at(_utc(2027, 1, 3, 23)).key == "2026-W53"
    assert BudgetWindow(WindowKind.WEEK).span_at(_utc(2027, 1, 4)).key == "2027-W01"


def test_a_custom_window_repeats_from_its_anchor_in_both_directions() -> None:
    window = BudgetWindow(WindowKind.DAYS, "UTC", 14, date(2026, 1, 5))
    assert window.span_at(_utc(2026, 3, 1, 9)) == WindowSpan(
        "2026-02-16/P14D", _utc(2026, 2, 16), _utc(2026, 3, 2)
    )
    assert window.span_at(_utc(2026, 1, 4, 23)).key == "2025-12-22/P14D"
    with pytest.raises(ValueError, match="1-62 days"):
        BudgetWindow(WindowKind.DAYS, "UTC", 0, date(2026, 1, 5))


@pytest.mark.parametrize(
    "window",
    [
        BudgetWindow(WindowKind.MONTH, BERLIN),
        BudgetWindow(WindowKind.WEEK, "Australia/Lord_Howe"),
        BudgetWindow(WindowKind.DAY, "America/Santiago"),
        BudgetWindow(WindowKind.DAY, "Pacific/Kiritimati"),
        BudgetWindow(WindowKind.DAYS, "America/New_York", 10, date(2025, 11, 2)),
    ],
    ids=lambda w: w.describe(),
)
def test_windows_tile_a_year_without_gap_or_overlap(window: BudgetWindow) -> None:
    span = window.span_at(_utc(2026, 1, 1))
    keys = {span.key}
    while span.end < _utc(2027, 1, 1):
        following = window.span_at(span.end)
        assert following.start == span.end, (span, following)
        assert window.span_at(span.end - timedelta(microseconds=1)) == span
        assert following.key not in keys
        keys.add(following.key)
        span = following


def test_a_tenant_without_a_window_counts_the_utc_month_under_the_months_own_key() -> None:
    tenant = cast(TenantConfig, {"budget": {"monthly_cap_usd": 10.0}})
    assert tenant_window(tenant) == BudgetWindow()
    assert tenant_window(tenant).span_at(_utc(2026, 12, 7, 23)).key == "2026-12"


def _problems(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_bundle(root)
    return "\n".join(str(p) for p in info.value.problems)


def _umbrella(root: Path, *, tenant: str = "", budget: str = "") -> str:
    """tenants.yaml with lines added to umbrella's tenant entry and to its budget."""
    text = (root / "tenants.yaml").read_text()
    out = text.replace("    plan: free\n", f"    plan: free\n{tenant}", 1)
    out = out.replace("      monthlyCapUsd: 50\n", f"      monthlyCapUsd: 50\n{budget}", 1)
    assert out != text
    return out


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


_ZONE = "    timeZone: {}\n"
_WINDOW = "      window: {}\n"


@pytest.mark.parametrize(
    ("zone", "window", "message"),
    [
        ("Mars/Olympus_Mons", None, "unknown time zone 'Mars/Olympus_Mons'"),
        ("../../etc/passwd", None, "unknown time zone"),
        (None, "fortnight", "window"),
        (None, "{days: 0, anchor: 2026-01-05}", "greater than or equal to 1"),
        (None, "{days: -7, anchor: 2026-01-05}", "greater than or equal to 1"),
        (None, "{days: 90, anchor: 2026-01-05}", "less than or equal to 62"),
        (None, "{days: 7}", "anchor"),
        (None, "{days: 7, anchor: 2999-01-01}", "anchor 2999-01-01 is in the future"),
        (None, "{days: 7, anchor: 2026-01-05, every: 2}", "every"),
    ],
)  # fmt: skip
def test_a_bad_zone_or_window_is_reported_at_its_place(
    make_bundle: BundleFactory, zone: str | None, window: str | None, message: str
) -> None:
    tenant = _ZONE.format(zone) if zone else ""
    budget = _WINDOW.format(window) if window else ""
    text = _umbrella(make_bundle(), tenant=tenant, budget=budget)
    line = _line_of(text, "timeZone" if zone else "window:")
    problems = _problems(make_bundle(**{"tenants.yaml": text}))
    assert re.search(rf"tenants\.yaml:{line}:\d+: ", problems), problems
    assert message in problems, problems


def _compiled(root: Path) -> dict[str, Any]:
    return dict(compile_data(resolve(load_bundle(root)), approval_jwks=""))


def test_windows_and_zones_compile_and_a_default_tenant_compiles_as_before(
    make_bundle: BundleFactory,
) -> None:
    root = make_bundle()
    text = _umbrella(
        root,
        tenant="    timeZone: Europe/Berlin\n",
        budget="      window: {days: 14, anchor: 2026-01-05}\n",
    )
    config = _compiled(make_bundle(**{"tenants.yaml": text}))
    umbrella = config["tenants"]["umbrella"]
    assert umbrella["time_zone"] == BERLIN
    assert umbrella["budget"]["window"] == {"kind": "days", "days": 14, "anchor": "2026-01-05"}
    assert tenant_window(umbrella) == BudgetWindow(WindowKind.DAYS, BERLIN, 14, date(2026, 1, 5))
    weekly = _compiled(
        make_bundle(**{"tenants.yaml": _umbrella(root, budget="      window: week\n")})
    )
    assert weekly["tenants"]["umbrella"]["budget"]["window"] == {"kind": "week"}
    explicit = _umbrella(root, tenant="    timeZone: UTC\n", budget="      window: month\n")
    assert _compiled(make_bundle(**{"tenants.yaml": explicit})) == _compiled(root)
    assert "window" not in _compiled(root)["tenants"]["acme"]["budget"]


def _tenant_config(window: dict[str, Any] | None, zone: str | None, cap: float = 50.0) -> Any:
    budget: dict[str, Any] = {"monthly_cap_usd": cap, "soft_cap_ratio": 0.8}
    if window is not None:
        budget["window"] = window
    tenant: dict[str, Any] = {"budget": budget}
    if zone is not None:
        tenant["time_zone"] = zone
    return {"tenants": {"umbrella": tenant}}


CUSTOM_60 = {"kind": "days", "days": 60, "anchor": "2026-01-05"}


@pytest.mark.parametrize(
    ("before", "after", "shown"),
    [
        ((None, None), ({"kind": "week"}, None), "budget window: month → week"),
        ((None, None), ({"kind": "day"}, None), "30.44 times the spend per day"),
        # Longer, with the same cap: less per day, yet counting restarts now.
        (({"kind": "week"}, None), (None, None), "budget window: week → month"),
        ((None, None), (CUSTOM_60, None), "month → 60 days from 2026-01-05"),
        ((CUSTOM_60, None), (CUSTOM_60 | {"anchor": "2026-02-01"}, None), "→ 60 days from 2026-02"),
        ((None, None), (None, "Pacific/Kiritimati"), "budget time zone: UTC → Pacific/Kiritimati"),
        ((None, "Europe/Berlin"), (None, None), "budget time zone: Europe/Berlin → UTC"),
    ],
)  # fmt: skip
def test_any_change_of_window_or_zone_widens_and_says_what_it_does(
    before: tuple[Any, Any], after: tuple[Any, Any], shown: str
) -> None:
    diff = diff_configs(_tenant_config(*before), _tenant_config(*after))
    changes = [c for c in diff.changes if c.area == "budget"]
    assert len(changes) == 1, changes
    assert changes[0].effect is Effect.WIDENS and changes[0].subject == "umbrella"
    assert shown in changes[0].detail, changes[0].detail
    assert diff.needs_second_approver and diff.raises_budget


def test_spelling_out_the_defaults_changes_nothing() -> None:
    diff = diff_configs(_tenant_config(None, None), _tenant_config(None, "UTC"))
    assert diff.changes == ()
    narrower = diff_configs(_tenant_config(None, None), _tenant_config(None, None, cap=40.0))
    assert not narrower.needs_second_approver, "a lower cap alone still narrows"


def test_the_spec_and_the_counters_agree_on_the_longest_custom_window() -> None:
    assert SPEC_MAX == MAX_WINDOW_DAYS == REQUEST_ID_TTL_S // 86_400


def test_a_cap_change_on_a_windowed_tenant_reads_per_window() -> None:
    diff = diff_configs(
        _tenant_config({"kind": "day"}, None), _tenant_config({"kind": "day"}, None, cap=60.0)
    )
    (change,) = diff.changes
    assert change.detail == "per-window cap raised: 50.0 → 60.0"
    assert change.effect is Effect.WIDENS
