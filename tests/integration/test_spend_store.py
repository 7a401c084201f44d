"""Spend counters: atomic and idempotent, in Redis and in process alike."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.spend import InProcessSpendStore, SpendStore, Usage
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
