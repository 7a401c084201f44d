"""Budget windows on the real stores: the window counters in a real Redis (and their seed
from an earlier version's month counters), disabled tenants keyed by window on a real
PostgreSQL, and the control plane republishing the state bundle when a window ends with no
report arriving, walked across the boundary with an injected clock.

Redis expires a window's counters at an absolute instant, so the instants here are found
from the real clock (the next day clocks change in Berlin, the next Berlin month), not fixed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.budgets import Budgets
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.spend import Usage
from nexus_control.budgets.state import current_state
from nexus_control.budgets.window import BudgetWindow, WindowKind
from nexus_control.store.database import control_database
from nexus_runtime.database import Database
from tests.fixtures.budget_windows import Books, window_config
from tests.fixtures.servers import RedisServer
from tests.fixtures.spend_plane import spend_plane

BERLIN = ZoneInfo("Europe/Berlin")


def _store(server: RedisServer) -> RedisSpendStore:
    return RedisSpendStore(server.url, prefix=f"nexus:win-{random.randrange(10**9)}")


def _next_short_berlin_day() -> date:
    """The next day (from tomorrow) that is 23 hours long in Berlin."""
    window = BudgetWindow(WindowKind.DAY, "Europe/Berlin")
    day = datetime.now(UTC) + timedelta(days=1)
    for _ in range(400):
        span = window.span_at(day)
        if span.end - span.start == timedelta(hours=23):
            return span.start.astimezone(BERLIN).date()
        day = span.end
    raise AssertionError("no daylight-saving change in Berlin within 400 days")


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    database = control_database(pg_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.mark.postgres
def test_on_redis_and_postgresql_a_day_window_resets_at_berlin_midnight_on_a_dst_day(
    redis_server: RedisServer, pg_db: Database
) -> None:
    short_day = _next_short_berlin_day()
    books = Books(pg_db, window_config("Europe/Berlin", {"kind": "day"}), _store(redis_server))
    span = BudgetWindow(WindowKind.DAY, "Europe/Berlin").span_at(
        datetime.combine(short_day, datetime.min.time(), BERLIN) + timedelta(hours=12)
    )
    assert books.report(30.0, span.end - timedelta(minutes=20)) == short_day.isoformat()
    assert books.report(25.0, span.end - timedelta(minutes=10)) == short_day.isoformat()
    before = books.state(span.end - timedelta(seconds=1))
    assert before["spend"]["hooli"]["ratio"] == pytest.approx(1.1)
    assert "hooli" in before["disabled"], "a window's key (10 characters) fits the column"
    assert before["resets"]["hooli"] == span.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    after = books.state(span.end)
    assert "hooli" not in after["spend"] and "hooli" not in after["disabled"]
    books.report(1.0, span.end + timedelta(seconds=1))
    assert books.state(span.end + timedelta(hours=1))["spend"]["hooli"]["ratio"] == pytest.approx(
        0.02
    )


@pytest.mark.postgres
def test_a_custom_windows_key_is_stored_for_a_disabled_tenant_on_postgresql(
    redis_server: RedisServer, pg_db: Database
) -> None:
    today = datetime.now(UTC).date()
    rule = {"kind": "days", "days": 14, "anchor": (today - timedelta(days=3)).isoformat()}
    books = Books(pg_db, window_config("UTC", rule), _store(redis_server))
    now = datetime.now(UTC)
    key = books.report(60.0, now)
    assert key.endswith("/P14D") and len(key) == 15
    assert "hooli" in books.state(now)["disabled"]


def test_a_window_keyed_like_the_month_starts_from_an_earlier_versions_month_counters(
    redis_server: RedisServer,
) -> None:
    """An upgrade mid-month: the month hash holds what the tenant spent before windows."""
    prefix = f"nexus:upgrade-{random.randrange(10**9)}"
    store = RedisSpendStore(redis_server.url, prefix=prefix)
    client = redis.Redis.from_url(redis_server.url)
    # What the earlier version wrote: the month's hash and the month's tenant set.
    client.hset(
        f"{prefix}:micro:2026-11:tenant:acme",
        mapping={"total": 40_000_000, "model:gpt-4o": 40_000_000},
    )
    client.sadd(f"{prefix}:2026-11:tenants", "acme")
    assert store.window_totals({"acme": "2026-11"})["acme"].total_micros == 40_000_000, (
        "read from the month until the window's first report"
    )
    totals = store.record(Usage("r-1", "acme", "gpt-4o", None, 1, 2.0, "2026-11", "2026-11-20"))
    assert totals is not None and totals.total_micros == 42_000_000
    assert store.window_totals({"acme": "2026-11"})["acme"].model_micros == {"gpt-4o": 42_000_000}
    weekly = Usage(
        "r-2", "acme", "gpt-4o", None, 1, 1.0, "2026-11", "2026-11-20", window="2026-W47"
    )
    totals = store.record(weekly)
    assert totals is not None and totals.total_micros == 1_000_000, "a week starts from zero"
    assert store.totals("2026-11")["acme"].total_micros == 43_000_000, "the month counts both"


@pytest.mark.opa
def test_the_state_bundle_is_republished_when_a_window_ends_with_no_report(
    tmp_path: Path, session_keys: KeyPaths, opa: Opa, redis_server: RedisServer
) -> None:
    """hooli (example bundle: a month on Berlin time, refused at its cap) over its cap just
    before its month ends is listed again from zero at the instant it does."""
    month = BudgetWindow(WindowKind.MONTH, "Europe/Berlin").span_at(datetime.now(UTC))
    clock = [month.end - timedelta(minutes=10)]
    with spend_plane(tmp_path, session_keys, opa, _store(redis_server)) as env:
        budgets = env.plane.budgets
        budgets.clock = lambda: clock[0]
        gateway = env.token(Role.GATEWAY, "hooli")
        for usd in (7_900.0, 150.0):
            response = env.usage(gateway, tenant="hooli", cost_usd=usd)
            assert response.status_code == 202, response.text
        budgets.rebuild()
        with env.plane.db.session() as session:
            row = current_state(session)
            assert row is not None
            over, revision = row.data, row.revision
        assert over["spend"]["hooli"]["ratio"] >= 1
        assert over["resets"]["hooli"] == month.end.strftime("%Y-%m-%dT%H:%M:%SZ")

        clock[0] = month.end + timedelta(seconds=1)
        asyncio.run(_run_until_republished(env.plane.db, budgets, revision))
        with env.plane.db.session() as session:
            row = current_state(session)
            assert row is not None
            assert "hooli" not in row.data["spend"]


async def _run_until_republished(db: Database, budgets: Budgets, revision: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(budgets.run(stop))
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            with db.session() as session:
                row = current_state(session)
                if row is not None and row.revision != revision:
                    return
        raise AssertionError("the state bundle was not rebuilt when the window ended")
    finally:
        stop.set()
        await loop
