"""GET /v1/budgets/spend: exact spend per hour and day, reconciling with the budget's month.

Usage goes in through ``POST /v1/usage`` and comes back through the cost API, on the
in-process counters and on a real Redis alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.money import to_micros, usd_string
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.spend import InProcessSpendStore, SpendStore, period_of
from tests.fixtures.spend_plane import SpendPlane, spend_plane

pytestmark = pytest.mark.opa


@pytest.fixture(params=["in-process", "redis"])
def cost_api(
    request: pytest.FixtureRequest, tmp_path: Path, session_keys: KeyPaths, opa: Opa
) -> Iterator[SpendPlane]:
    store: SpendStore
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        store = RedisSpendStore(server.url, prefix=f"nexus:cost-{random.randrange(10**9)}")
    else:
        store = InProcessSpendStore()
    with spend_plane(tmp_path, session_keys, opa, store) as env:
        yield env


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_hours_sum_to_days_and_days_to_the_month_the_budget_uses(cost_api: SpendPlane) -> None:
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    costs = [0.1, 0.2, 0.3, 0.000001, 1.1, 2.675, 0.1, 0.1]
    combos = [
        {"model": "gpt-4o", "endpoint": "chat.completions"},
        {"model": "gpt-4.1", "endpoint": "tools.invoke", "feature": "support-chat"},
        {"model": "gpt-4o"},
    ]
    sent = []
    for n, cost in enumerate(costs):
        when = hour - timedelta(hours=n % 3) - timedelta(minutes=n)
        answer = cost_api.usage(cost_usd=cost, occurred_at=iso(when), **combos[n % 3])
        assert answer.status_code == 202, answer.text
        sent.append((when, cost))
    # Every report is also booked to its month; a month is what the budget compares.
    periods = {period_of(when) for when, _ in sent}
    days = sorted({when.date() for when, _ in sent})
    start = datetime.combine(days[0], datetime.min.time(), UTC)
    end = datetime.combine(days[-1], datetime.min.time(), UTC) + timedelta(days=1)
    hourly = cost_api.spend(
        "operator", tenant="acme", granularity="hour", **{"from": iso(start), "to": iso(end)}
    )
    daily = cost_api.spend(
        "operator", tenant="acme", granularity="day", **{"from": iso(start), "to": iso(end)}
    )
    assert hourly.status_code == daily.status_code == 200, hourly.text
    expected = sum(to_micros(c) for _, c in sent)
    exact = sum((Decimal(repr(c)) for _, c in sent), Decimal(0))
    assert sum(r["spend_micro_usd"] for r in hourly.json()["rows"]) == expected
    assert hourly.json()["total_micro_usd"] == daily.json()["total_micro_usd"] == expected
    assert daily.json()["total_usd"] == f"{exact:.6f}" == usd_string(expected)
    for day in daily.json()["rows"]:
        hours = [r for r in hourly.json()["rows"] if r["bucket"].startswith(day["bucket"])]
        assert sum(r["spend_micro_usd"] for r in hours) == day["spend_micro_usd"]
    month = sum(
        cost_api.plane.budgets.spend.totals(period)["acme"].total_micros for period in periods
    )
    assert month == expected, "the budget's monthly spend is the cells' sum"


def test_group_by_splits_the_same_total(cost_api: SpendPlane) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cost_api.usage(cost_usd=0.25, endpoint="chat.completions")
    cost_api.usage(cost_usd=0.5, model="gpt-4.1", feature="support-chat")
    cost_api.usage(tenant="hooli", cost_usd=4.0, token=cost_api.token(Role.GATEWAY, "hooli"))
    window = {
        "from": today.date().isoformat(),
        "to": (today + timedelta(days=1)).date().isoformat(),
    }
    grouped = cost_api.spend("operator", group_by="route,tenant,model,feature", **window).json()
    assert grouped["group_by"] == ["tenant", "model", "feature", "route"]
    assert sorted(grouped["tenants"]) == ["acme", "hooli"]
    groups = {tuple(r["group"].values()): r["spend_usd"] for r in grouped["rows"]}
    assert groups == {
        ("acme", "gpt-4o", None, "chat.completions"): "0.250000",
        ("acme", "gpt-4.1", "support-chat", None): "0.500000",
        ("hooli", "gpt-4o", None, None): "4.000000",
    }
    assert grouped["total_usd"] == "4.750000"
    acme = cost_api.spend("operator", tenant="acme", **window).json()
    assert acme["total_usd"] == "0.750000" and acme["rows"][0]["group"] == {}


def test_a_finops_token_reads_its_tenants_and_an_operator_reads_all(cost_api: SpendPlane) -> None:
    today = datetime.now(UTC).date()
    cost_api.usage(cost_usd=1.0)
    cost_api.usage(tenant="hooli", cost_usd=2.0, token=cost_api.token(Role.GATEWAY, "hooli"))
    window = {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    finops = cost_api.spend("finops", group_by="tenant", **window)
    assert finops.status_code == 200, finops.text
    assert finops.json()["tenants"] == ["acme"] and finops.json()["total_usd"] == "1.000000"
    compliance = cost_api.spend("compliance", group_by="tenant", **window).json()
    assert compliance["total_usd"] == "3.000000"
    for role in ("author", "approver", "gateway", "remediator"):
        assert cost_api.spend(role, **window).status_code == 403, role


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from": "2026-12-03", "to": "2026-12-01"}, "is after to"),
        ({"from": "2025-01-01", "to": "2026-03-01"}, "kept 400 days"),
        ({"from": "2026-12-01", "to": "2026-12-10", "granularity": "hour"}, "kept 8 days"),
        ({"from": "2026-12-01", "to": "2026-12-02", "granularity": "week"}, "unknown granularity"),
        (
            {"from": "2026-12-01", "to": "2026-12-02", "group_by": "model,colour"},
            "unknown group_by",
        ),
        ({"from": "2026-12-01T10:30:00Z", "to": "2026-12-02"}, "not on a UTC midnight"),
        ({"from": "2026-12-01T10:00:00", "to": "2026-12-02", "granularity": "hour"}, "time zone"),
        ({"from": "yesterday", "to": "2026-12-02"}, "neither a date"),
    ],
)
def test_bad_ranges_are_400_with_the_reason(
    cost_api: SpendPlane, params: dict[str, str], reason: str
) -> None:
    answer = cost_api.spend("operator", **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_query"
    assert reason in answer.json()["error"]["message"]


def test_the_cost_api_is_documented(cost_api: SpendPlane) -> None:
    document = cost_api.client.get(
        "/openapi.json", headers={"authorization": f"Bearer {cost_api.tokens['operator']}"}
    ).json()
    operation = document["paths"]["/v1/budgets/spend"]["get"]
    assert set(operation["x-nexus-roles"]) == {"operator", "compliance", "finops"}
    assert {p["name"] for p in operation["parameters"]} == {
        "from",
        "to",
        "tenant",
        "granularity",
        "group_by",
    }
    assert {"200", "400", "403"} <= set(operation["responses"])
    assert "finops" in operation["description"]
