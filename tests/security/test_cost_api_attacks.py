"""Insider attacks on the cost API and the spend counters behind it, against a real Redis.

A finops token is scoped to the tenants it names: it cannot read another tenant's
spend. A gateway token cannot make the counters grow by the choice of its reports:
a made-up route or model is refused (422) before anything is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.redis_spend import RedisSpendStore
from tests.fixtures.servers import RedisServer
from tests.fixtures.spend_plane import SpendPlane, spend_plane

pytestmark = [pytest.mark.opa, pytest.mark.redis]


@pytest.fixture
def attacked(
    tmp_path: Path, session_keys: KeyPaths, opa: Opa, redis_server: RedisServer
) -> Iterator[tuple[SpendPlane, redis.Redis]]:
    store = RedisSpendStore(redis_server.url, prefix="nexus:spend")
    with spend_plane(tmp_path, session_keys, opa, store) as env:
        yield env, redis.Redis.from_url(redis_server.url)


def today() -> dict[str, str]:
    day = datetime.now(UTC).date()
    return {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}


def test_tenant_scoped_token_reading_another_tenants_spend_is_403(
    attacked: tuple[SpendPlane, redis.Redis],
) -> None:
    env, _ = attacked
    hooli_gateway = env.token(Role.GATEWAY, "hooli")
    assert env.usage(hooli_gateway, tenant="hooli", cost_usd=9.0).status_code == 202
    acme_finops = env.token(Role.FINOPS, "acme")
    refused = env.spend(acme_finops, tenant="hooli", **today())
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "hooli" in refused.json()["error"]["message"]
    unnamed = env.spend(acme_finops, group_by="tenant", **today()).json()
    assert unnamed["tenants"] == ["acme"] and unnamed["total_micro_usd"] == 0, (
        "without a tenant, only the token's own tenants are read"
    )
    assert env.spend(env.tokens["operator"], tenant="hooli", **today()).json()["total_usd"] == (
        "9.000000"
    )
    # Read-only and nothing else: no usage, no budgets overview, no other admin route.
    assert env.usage(acme_finops).status_code == 403
    headers = {"authorization": f"Bearer {acme_finops}"}
    assert env.client.get("/v1/budgets", headers=headers).status_code == 403
    assert env.client.get("/v1/rollouts", headers=headers).status_code == 403


def test_usage_report_with_a_made_up_endpoint_is_422_and_creates_no_key(
    attacked: tuple[SpendPlane, redis.Redis],
) -> None:
    env, client = attacked
    assert env.usage(endpoint="chat.completions").status_code == 202
    before = sorted(client.keys("*"))
    for n in range(50):
        for endpoint in (
            f"/v1/flood/{uuid.uuid4()}",
            f"chat.completions.{n}",
            "/v1/chat/completions",
        ):
            answer = env.usage(endpoint=endpoint)
            assert answer.status_code == 422, answer.text
            assert "unknown route" in answer.json()["error"]["message"]
    assert sorted(client.keys("*")) == before, "a refused report writes no counter"


def test_usage_report_with_a_made_up_model_is_422_and_creates_no_key(
    attacked: tuple[SpendPlane, redis.Redis],
) -> None:
    env, client = attacked
    umbrella = env.token(Role.GATEWAY, "umbrella")
    assert env.usage(umbrella, tenant="umbrella", model="gpt-4o-mini").status_code == 202
    before = sorted(client.keys("*"))
    for _ in range(50):
        made_up = env.usage(model=f"gpt-{uuid.uuid4().hex[:12]}")
        assert made_up.status_code == 422 and "unknown model" in made_up.json()["error"]["message"]
        feature = env.usage(feature=f"f-{uuid.uuid4().hex[:12]}")
        assert feature.status_code == 422
        assert "unknown feature" in feature.json()["error"]["message"]
    outside_plan = env.usage(umbrella, tenant="umbrella", model="gpt-4o")
    assert outside_plan.status_code == 422, "the free plan does not have gpt-4o"
    assert "may use" in outside_plan.json()["error"]["message"]
    assert sorted(client.keys("*")) == before, "a refused report writes no counter"
