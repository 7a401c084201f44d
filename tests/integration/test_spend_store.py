"""Spend counters: atomic and idempotent, in Redis and in process alike."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from nexus_control.budgets.cells import DAYS_KEPT, HOURS_KEPT, Combo, Granularity
from nexus_control.budgets.money import to_micros
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.spend import InProcessSpendStore, SpendStore, Usage, day_of
from tests.fixtures.servers import RedisServer


def usage(
    request_id: str,
    tenant: str = "acme",
    cost: float = 1.25,
    period: str = "2026-11",
    model: str = "gpt-4o",
    feature: str | None = "chat",
) -> Usage:
    return Usage(request_id, tenant, model, feature, 10, cost, period)


def check_store(store: SpendStore) -> None:
    first = store.record(usage("r-1"))
    assert first is not None and first.total == pytest.approx(1.25)
    assert store.record(usage("r-1")) is None, "the same request id counts once"
    totals = store.record(usage("r-2", model="gpt-4.1", feature=None, cost=2.0))
    assert totals is not None
    assert totals.total == pytest.approx(3.25)
    assert totals.models == {"gpt-4o": pytest.approx(1.25), "gpt-4.1": pytest.approx(2.0)}
    assert totals.features == {"chat": pytest.approx(1.25)}
    store.record(usage("r-3", period="2026-12", cost=9.0))
    assert store.totals("2026-11")["acme"].total == pytest.approx(3.25)
    assert store.totals("2026-12")["acme"].total == pytest.approx(9.0), (
        "a new month starts from zero"
    )

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: store.record(usage(f"c-{i % 50}", tenant="beta", cost=1.0)), range(200)
            )
        )
    assert sum(r is not None for r in results) == 50
    assert store.totals("2026-11")["beta"].total == pytest.approx(50.0)


def check_daily(store: SpendStore) -> None:
    """Each report adds to its day, per tenant and for all, by model, feature and endpoint."""
    for n, (tenant, day, cost) in enumerate(
        [("acme", "2026-11-03", 1.0), ("acme", "2026-11-03", 2.0), ("hooli", "2026-11-04", 4.0)]
    ):
        store.record(
            Usage(
                f"d-{n}", tenant, "gpt-4o", "chat", 1, cost, "2026-11", day, "/v1/chat/completions"
            )
        )
    every = store.daily("2026-11")
    assert sorted(every) == ["2026-11-03", "2026-11-04"]
    assert every["2026-11-03"].total == pytest.approx(3.0)
    assert every["2026-11-03"].endpoints == {"/v1/chat/completions": pytest.approx(3.0)}
    assert every["2026-11-04"].models == {"gpt-4o": pytest.approx(4.0)}
    assert store.daily("2026-11", "hooli")["2026-11-04"].features == {"chat": pytest.approx(4.0)}
    assert "2026-11-04" not in store.daily("2026-11", "acme")
    assert store.daily("2026-12") == {}


def test_in_process_store() -> None:
    check_store(InProcessSpendStore())


def test_in_process_store_keeps_spend_per_day() -> None:
    check_daily(InProcessSpendStore())


@pytest.mark.redis
def test_redis_store_keeps_spend_per_day(redis_server: RedisServer) -> None:
    check_daily(RedisSpendStore(redis_server.url, prefix="nexus:daily-test"))


@pytest.mark.redis
def test_redis_store(redis_server: RedisServer) -> None:
    store = RedisSpendStore(redis_server.url)
    assert store.ping()
    check_store(store)


@pytest.mark.redis
def test_redis_store_survives_a_second_client(redis_server: RedisServer) -> None:
    RedisSpendStore(redis_server.url).record(usage("x-1", cost=4.0))
    assert RedisSpendStore(redis_server.url).totals("2026-11")["acme"].total == pytest.approx(4.0)


def exact_usage(n: int, day: str, hour: int, cost: float, **fields: Any) -> Usage:
    return Usage(
        f"x-{n}",
        fields.get("tenant", "acme"),
        fields.get("model", "gpt-4o"),
        fields.get("feature"),
        1,
        cost,
        day[:7],
        day,
        fields.get("route"),
        hour,
    )


def check_cells_reconcile(store: SpendStore) -> None:
    """The hours of a day sum to the day's cell, and the days to the month, exactly."""
    day = day_of(datetime.now(UTC) - timedelta(days=1))
    costs = [0.1] * 10 + [0.2, 0.7, 0.000001, 3.333333]
    for n, cost in enumerate(costs):
        store.record(
            exact_usage(
                n, day, n % 5, cost, feature="chat" if n % 2 else None, route="tools.invoke"
            )
        )
    expected = sum(to_micros(c) for c in costs)
    assert expected == 5_233_334, "0.1 ten times is one dollar in micro-dollars"
    hours = store.cells(Granularity.HOUR, [f"{day}T{h:02d}" for h in range(24)], ["acme"])
    day_cells = store.cells(Granularity.DAY, [day], ["acme"])
    assert sum(c.micros for c in hours) == sum(c.micros for c in day_cells) == expected
    assert store.totals(day[:7])["acme"].total_micros == expected
    assert store.daily(day[:7], "acme")[day].total_micros == expected
    assert {c.combo for c in day_cells} == {
        Combo("gpt-4o", None, "tools.invoke"),
        Combo("gpt-4o", "chat", "tools.invoke"),
    }
    assert store.tenants_on([day]) == {"acme"}


def check_expired_hours_are_gone(store: SpendStore) -> None:
    old = day_of(datetime.now(UTC) - timedelta(days=10))
    store.record(exact_usage(99, old, 3, 2.5))
    assert store.cells(Granularity.HOUR, [f"{old}T03"], ["acme"]) == [], "hours kept 8 days"
    (kept,) = store.cells(Granularity.DAY, [old], ["acme"])
    assert kept.micros == 2_500_000


def test_in_process_cells_reconcile_and_expire() -> None:
    store = InProcessSpendStore()
    check_cells_reconcile(store)
    check_expired_hours_are_gone(store)


@pytest.mark.redis
def test_redis_cells_reconcile_expire_and_carry_a_ttl(redis_server: RedisServer) -> None:
    store = RedisSpendStore(redis_server.url, prefix="nexus:cells")
    check_cells_reconcile(store)
    check_expired_hours_are_gone(store)
    client = redis.Redis.from_url(redis_server.url)
    keys = [k.decode() for k in client.keys("nexus:cells:micro:*")]
    assert keys, "the counters are under the micro-dollar namespace"
    for key in keys:
        ttl = client.ttl(key)
        kept = HOURS_KEPT if ":cell:hour:" in key else DAYS_KEPT + timedelta(days=31)
        assert 0 < ttl <= (kept + timedelta(days=2)).total_seconds(), f"{key}: ttl {ttl}"


@pytest.mark.redis
def test_redis_reads_an_earlier_versions_float_counters_beside_the_new(
    redis_server: RedisServer,
) -> None:
    """During the transition the float hashes an earlier version wrote still count."""
    client = redis.Redis.from_url(redis_server.url)
    client.hincrbyfloat("nexus:legacy:2026-11:tenant:acme", "total", 0.1)
    client.hincrbyfloat("nexus:legacy:2026-11:tenant:acme", "model:gpt-4o", 0.1)
    client.hincrbyfloat("nexus:legacy:day:2026-11-03:tenant:acme", "total", 0.1)
    client.sadd("nexus:legacy:2026-11:tenants", "acme")
    store = RedisSpendStore(redis_server.url, prefix="nexus:legacy")
    assert store.spent("2026-11") == {"acme": pytest.approx(0.1)}
    totals = store.record(exact_usage(1, "2026-11-03", 9, 0.2))
    assert totals is not None and totals.total_micros == 300_000
    assert store.totals("2026-11")["acme"].model_micros == {"gpt-4o": 300_000}
    assert store.daily("2026-11", "acme")["2026-11-03"].total_micros == 300_000
