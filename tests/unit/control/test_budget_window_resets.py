"""A budget window's boundary resets what the policy sees, proven with an injected clock on
SQLite and the in-process counters: a tenant refused (or disabled) at its cap in one window
is served again in the next, across a daylight-saving change and a week's Monday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_control.budgets.cells import Granularity
from nexus_control.budgets.overview import spend_overview
from nexus_runtime.database import Database
from tests.fixtures.budget_windows import Books, window_config


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


SECOND = timedelta(seconds=1)


def test_a_day_window_disables_at_the_cap_and_resets_at_berlin_midnight_on_the_dst_day(
    db: Database,
) -> None:
    books = Books(db, window_config("Europe/Berlin", {"kind": "day"}))
    # 29 March 2026 is 23 hours long in Berlin: it ends at 22:00 UTC (midnight CEST).
    late = _utc(2026, 3, 29, 21, 30)
    assert books.report(30.0, late) == "2026-03-29"
    assert books.report(25.0, late + SECOND) == "2026-03-29"
    before = books.state(_utc(2026, 3, 29, 21, 59, 59))
    assert before["spend"]["hooli"]["ratio"] == pytest.approx(1.1)
    assert before["disabled"]["hooli"]["reason"].startswith("hard cap reached in budget window")
    assert before["resets"] == {"hooli": "2026-03-29T22:00:00Z"}

    after = books.state(_utc(2026, 3, 29, 22))
    assert "hooli" not in after["spend"] and "hooli" not in after["disabled"]
    assert "resets" not in after, "nothing is listed for a tenant that has not spent yet"
    assert books.report(5.0, _utc(2026, 3, 29, 22, 0, 1)) == "2026-03-30"
    served = books.state(_utc(2026, 3, 29, 23))
    assert served["spend"]["hooli"]["ratio"] == pytest.approx(0.1)
    assert served["resets"] == {"hooli": "2026-03-30T22:00:00Z"}
    # The cost data keep every report in its UTC day, whichever window counted it.
    cells = books.store.cells(Granularity.DAY, ["2026-03-29"], ["hooli"])
    assert sum(c.micros for c in cells) == 60_000_000


def test_a_month_window_in_berlin_resets_at_local_midnight_not_utc_midnight(db: Database) -> None:
    books = Books(db, window_config("Europe/Berlin", None, on_hard_cap="refuse"))
    # October 2026 in Berlin: clocks fell back on the 25th (CET, UTC+1), so November
    # begins at 23:00 UTC on 31 October, an hour before the UTC month does.
    books.report(60.0, _utc(2026, 10, 31, 22, 59, 59))
    over = books.state(_utc(2026, 10, 31, 22, 59, 59))
    assert over["spend"]["hooli"]["ratio"] == pytest.approx(1.2)
    assert over["resets"]["hooli"] == "2026-10-31T23:00:00Z"
    november = books.state(_utc(2026, 10, 31, 23))
    assert november["period"] == "2026-10", "the document still names the UTC month"
    assert "hooli" not in november["spend"]
    assert books.report(1.0, _utc(2026, 10, 31, 23, 30)) == "2026-11"


def test_a_week_window_resets_on_monday_in_the_tenants_zone(db: Database) -> None:
    books = Books(db, window_config("America/New_York", {"kind": "week"}, on_hard_cap="refuse"))
    sunday_late = _utc(2026, 3, 9, 3, 59)  # Sunday 8 March, 23:59 EDT
    assert books.report(55.0, sunday_late) == "2026-W10"
    assert books.state(sunday_late)["spend"]["hooli"]["ratio"] == pytest.approx(1.1)
    monday = _utc(2026, 3, 9, 4)  # Monday 9 March, 00:00 EDT
    assert "hooli" not in books.state(monday)["spend"]
    assert books.report(5.0, monday) == "2026-W11"
    assert books.state(monday + timedelta(days=6))["spend"]["hooli"]["ratio"] == pytest.approx(0.1)


def test_a_custom_window_resets_after_its_days(db: Database) -> None:
    books = Books(db, window_config("UTC", {"kind": "days", "days": 10, "anchor": "2026-03-01"}))
    assert books.report(50.0, _utc(2026, 3, 10, 23)) == "2026-03-01/P10D"
    assert "hooli" in books.state(_utc(2026, 3, 10, 23, 59))["disabled"]
    assert books.state(_utc(2026, 3, 11))["disabled"] == {}


def test_the_overview_of_this_month_flags_a_tenant_disabled_for_its_day(db: Database) -> None:
    books = Books(db, window_config("Europe/Berlin", {"kind": "day"}))
    now = _utc(2026, 3, 29, 21, 30)
    assert books.report(60.0, now) == "2026-03-29"
    with db.session() as session:
        flagged = spend_overview(
            session, books.store, books.config, "2026-03", {"hooli": "2026-03-29"}
        )
        unflagged = spend_overview(
            session, books.store, books.config, "2026-03", {"hooli": "2026-03-30"}
        )
    assert [row.disabled_reason is not None for row in flagged.tenants] == [True]
    assert [row.disabled_reason for row in unflagged.tenants] == [None], "only its open window's"
