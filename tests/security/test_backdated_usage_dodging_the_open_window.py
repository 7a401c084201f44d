"""A gateway token backdates usage into a budget window already closed, to spend past the
cap of the window open now, against a real Redis.

The window a report names by its ``occurred_at`` is where it is charged only while that
window is open: a closed window's cap refuses nothing any more, so spend booked there
would escape every cap. The report is charged to the open window instead (and counted
once, whatever its request id's replays), while the cost data still place it at its
``occurred_at``, so they reconcile exactly with the reports received.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.cells import Granularity, bucket_of
from nexus_control.budgets.money import to_micros
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.budgets.state import current_state
from nexus_control.budgets.window import BudgetWindow, WindowKind, WindowSpan
from tests.fixtures.servers import RedisServer
from tests.fixtures.spend_plane import SpendPlane, spend_plane

pytestmark = [pytest.mark.opa, pytest.mark.redis]

HOOLI_MONTH = BudgetWindow(WindowKind.MONTH, "Europe/Berlin")
"""hooli's window in the example bundle; its cap is $8,000 and it is refused at it."""


@pytest.fixture
def attacked(
    tmp_path: Path, session_keys: KeyPaths, opa: Opa, redis_server: RedisServer
) -> Iterator[tuple[SpendPlane, WindowSpan]]:
    """The control plane half an hour into hooli's next Berlin month (an injected clock;
    Redis expires counters at absolute instants, so the month is the real next one)."""
    store = RedisSpendStore(redis_server.url, prefix=f"nexus:late-{random.randrange(10**9)}")
    opened = HOOLI_MONTH.span_at(HOOLI_MONTH.span_at(datetime.now(UTC)).end)
    with spend_plane(tmp_path, session_keys, opa, store) as env:
        env.plane.budgets.clock = lambda: opened.start + timedelta(minutes=30)
        yield env, opened


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_usage_backdated_into_a_closed_window_is_charged_to_the_open_one(
    attacked: tuple[SpendPlane, WindowSpan],
) -> None:
    env, opened = attacked
    gateway = env.token(Role.GATEWAY, "hooli")
    fair = env.usage(gateway, tenant="hooli", cost_usd=7_950.0)
    assert fair.status_code == 202 and fair.json()["window"] == opened.key, fair.text
    closed = opened.start - timedelta(minutes=20)
    dodge = {"request_id": "req-backdated-0001", "tenant": "hooli", "cost_usd": 500.0}
    for _ in range(3):  # replays of one request id count once
        late = env.usage(gateway, **dodge, occurred_at=_iso(closed))
        assert late.status_code == 202, late.text
    answer = late.json()
    assert answer["window"] == opened.key, "charged to the window open now, not the closed one"

    env.plane.budgets.rebuild()
    with env.plane.db.session() as session:
        row = current_state(session)
        assert row is not None
        state = row.data
    assert state["spend"]["hooli"]["ratio"] == pytest.approx(8_450 / 8_000)
    assert state["spend"]["hooli"]["remaining"]["total"] == to_micros(8_000 - 8_450)
    assert state["resets"]["hooli"] == opened.end.strftime("%Y-%m-%dT%H:%M:%SZ")

    # The cost data put the late spend where it happened, and sum to the reports received.
    hour_before = bucket_of(Granularity.HOUR, closed)
    hour_after = bucket_of(Granularity.HOUR, opened.start + timedelta(minutes=30))
    cells = env.plane.budgets.spend.cells(Granularity.HOUR, [hour_before, hour_after], ["hooli"])
    by_hour = {c.bucket: c.micros for c in cells}
    assert by_hour == {hour_before: to_micros(500.0), hour_after: to_micros(7_950.0)}


def test_usage_backdated_within_the_open_window_counts_there(
    attacked: tuple[SpendPlane, WindowSpan],
) -> None:
    env, opened = attacked
    gateway = env.token(Role.GATEWAY, "hooli")
    early = env.usage(
        gateway, tenant="hooli", cost_usd=3.0, occurred_at=_iso(opened.start + timedelta(seconds=1))
    )
    assert early.status_code == 202 and early.json()["window"] == opened.key, early.text
