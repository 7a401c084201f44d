"""An author widens a tenant's budget window alone, to let it spend more past four eyes.

A month's cap made a day's (30 times the spend a month), a shorter or longer window that
restarts counting now, or a time zone that ends the open window hours early: each is a
change of the budget window, which the diff calls widening, so the publication waits for
a second person and the policy in force keeps counting the tenant's month.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.budgets.spend import InProcessSpendStore
from tests.conftest import BundleFactory
from tests.fixtures.spend_plane import SpendPlane, spend_plane

pytestmark = pytest.mark.opa

HOOLI_WINDOW = "      window: month\n"
HOOLI_ZONE = "    timeZone: Europe/Berlin\n"


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[SpendPlane]:
    with spend_plane(tmp_path, session_keys, opa, InProcessSpendStore()) as env:
        yield env


def _publish(env: SpendPlane, root: Path) -> dict[str, object]:
    published = env.client.post(
        "/v1/bundles",
        content=pack_sources(root),
        headers={
            "authorization": f"Bearer {env.tokens['author']}",
            "content-type": "application/vnd.nexus.sources+gzip",
        },
    )
    assert published.status_code == 201, published.text
    body: dict[str, object] = published.json()
    return body


def _tenants_with(make_bundle: BundleFactory, old: str, new: str) -> Path:
    text = (make_bundle() / "tenants.yaml").read_text()
    assert text.count(old) == 1, "the example bundle names hooli's window and zone once"
    return make_bundle(**{"tenants.yaml": text.replace(old, new)})


@pytest.mark.parametrize(
    ("old", "new", "shown"),
    [
        (HOOLI_WINDOW, "      window: day\n", "budget window: month → day"),
        (HOOLI_WINDOW, "      window: {days: 60, anchor: 2026-01-05}\n", "60 days from 2026-01-05"),
        (HOOLI_ZONE, "    timeZone: Pacific/Kiritimati\n", "budget time zone: Europe/Berlin →"),
    ],
    ids=["month-to-day", "month-to-60-days", "berlin-to-kiritimati"],
)  # fmt: skip
def test_a_widened_window_waits_for_a_second_approver_and_the_month_stays_in_force(
    plane: SpendPlane, make_bundle: BundleFactory, old: str, new: str, shown: str
) -> None:
    published = _publish(plane, _tenants_with(make_bundle, old, new))
    rollout = published["rollout"]
    assert isinstance(rollout, dict) and rollout["state"] == "pending_approval", rollout
    changes = plane.client.get(
        f"/v1/rollouts/{rollout['id']}/changes",
        headers={"authorization": f"Bearer {plane.tokens['operator']}"},
    )
    assert changes.status_code == 200, changes.text
    hooli = [c for c in changes.json()["changes"] if c["subject"] == "hooli"]
    assert [c["effect"] for c in hooli] == ["widens"], hooli
    assert shown in hooli[0]["detail"]

    own = plane.client.post(
        f"/v1/rollouts/{rollout['id']}/approve",
        json={},
        headers={"authorization": f"Bearer {plane.tokens['author']}"},
    )
    assert own.status_code == 403, "the author is not the second pair of eyes"
    in_force = plane.plane.budgets.config_or_none()
    assert in_force is not None
    assert "window" not in in_force["tenants"]["hooli"]["budget"]
    assert in_force["tenants"]["hooli"]["time_zone"] == "Europe/Berlin"

    # Spend past the cap under the month in force is still refused: one window, not a day's.
    gateway = plane.token(Role.GATEWAY, "hooli")
    for usd in (7_900.0, 150.0):
        assert plane.usage(gateway, tenant="hooli", cost_usd=usd).status_code == 202
    outcome = plane.usage(gateway, tenant="hooli", cost_usd=1.0).json()
    assert outcome["ratio"] >= 1 and re.fullmatch(r"\d{4}-\d{2}", outcome["window"]), outcome
