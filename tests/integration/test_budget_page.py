"""The budgets page's top tenants are the overview's, on the in-process store and on real Redis.

`spend_page` ranks tenants by one number each and builds only the page's rows;
what it shows must be what `spend_overview` (every tenant, built and sorted)
shows of the same tenants: order (ties by id), caps, states, disabled
tenants, totals, anomalies.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets.overview import spend_overview, spend_page
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.spend import InProcessSpendStore, SpendStore, Usage
from nexus_control.store.database import control_database
from nexus_control.store.tables import DisabledTenant
from nexus_runtime.database import Database
from tests.fixtures.servers import RedisServer

PERIOD = "2026-11"
TENANTS = 140


def _config() -> CompiledConfig:
    tenants: dict[str, Any] = {}
    for n in range(TENANTS):
        tenants[f"t{n:03d}"] = {
            "name": f"Tenant {n}",
            "plan": "team",
            "budget": {
                "monthly_cap_usd": (0.0, 10.0, 20.0, 40.0)[n % 4],
                "soft_cap_ratio": 0.8,
                "on_hard_cap": "block",
                "per_model": {"gpt-4o": 5.0} if n % 3 == 0 else {},
                "per_feature": {"chat": 2.0} if n % 5 == 0 else {},
            },
        }
    return cast(CompiledConfig, {"tenants": tenants})


def _fill(store: SpendStore) -> None:
    rng = random.Random(11)
    for n in range(TENANTS * 4):
        tenant = f"t{rng.randrange(TENANTS + 10):03d}"  # a few spend with no tenant in the policy
        cost = 10.0 if n % 7 == 0 else round(rng.uniform(0.1, 9.0), 2)  # ties of ratio
        day = f"{PERIOD}-{1 + n % 9:02d}" if n % 50 else f"{PERIOD}-09"
        store.record(
            Usage(f"r-{n}", tenant, rng.choice(("gpt-4o", "mini")), rng.choice(("chat", None)),
                  10, cost * (30 if n == 499 else 1), PERIOD, day, "/v1/chat/completions")
        )  # fmt: skip


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> SpendStore:
    if request.param == "in-process":
        return InProcessSpendStore()
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisSpendStore(server.url, prefix=f"nexus:page-{random.randrange(10**9)}")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = control_database(f"sqlite:///{tmp_path / 'cp.db'}")
    database.migrate()
    with database.session() as session:
        for tenant in ("t007", "t100"):
            session.add(
                DisabledTenant(
                    tenant=tenant, period=PERIOD, reason="hard cap", since=datetime.now(UTC)
                )
            )
    yield database
    database.dispose()


@pytest.mark.parametrize("limit", [1, 50, TENANTS + 5])
def test_the_page_shows_the_overviews_first_tenants(
    store: SpendStore, db: Database, limit: int
) -> None:
    config = _config()
    _fill(store)
    with db.session() as session:
        whole = spend_overview(session, store, config, PERIOD)
        page = spend_page(session, store, config, PERIOD, limit=limit)
    assert page.tenants == whole.tenants[:limit]
    assert page.tenant_count == len(whole.tenants) == TENANTS
    assert page.total_usd == pytest.approx(whole.total_usd)
    assert page.disabled_count == 2 == sum(t.disabled_reason is not None for t in whole.tenants)
    assert page.daily == whole.daily
    assert page.anomalies == whole.anomalies and page.anomalies, "the seeded spike is found"
    assert page.in_force


def test_one_tenant_is_its_overview_row_and_an_unknown_one_has_none(
    store: SpendStore, db: Database
) -> None:
    config = _config()
    _fill(store)
    with db.session() as session:
        whole = spend_overview(session, store, config, PERIOD)
        for tenant in ("t007", "t033", "t139"):
            page = spend_page(session, store, config, PERIOD, tenant=tenant)
            assert page.tenants == [t for t in whole.tenants if t.tenant == tenant]
            assert page.total_usd == pytest.approx(whole.total_usd)
        assert spend_page(session, store, config, PERIOD, tenant="t145").tenants == []


def test_with_no_policy_in_force_the_page_is_empty(store: SpendStore, db: Database) -> None:
    _fill(store)
    with db.session() as session:
        page = spend_page(session, store, None, PERIOD)
    assert not page.in_force and page.tenants == [] and page.tenant_count == 0
