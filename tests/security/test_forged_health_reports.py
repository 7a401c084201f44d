"""An insider forges provider health to push traffic onto a model of their choosing (or off
one): every way is refused, nothing stored, nothing audited as a change.

On the control plane over SQLite and a real PostgreSQL, with the example bundle in force:
a tenant-scoped gateway token, an enforcer's token, and the people's roles (author,
approver, operator, compliance) may not report health (403); a probe bound to eu-west-1
may not report for another region, nor for every region (403); a probe token can neither
publish, approve nor read spend. Only a probe's report reaches the state bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.store import outbox
from nexus_control.store.tables import TargetHealth
from tests.conftest import GATEWAY

pytestmark = pytest.mark.opa

SOURCES_TYPE = {"content-type": "application/vnd.nexus.sources+gzip"}
PEOPLE = (Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE)


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        for role in PEOPLE:
            out[role.value], _ = create_token(session, name=f"mallory-{role.value}", role=role)
        out["gateway"], _ = create_token(
            session, name="mallory-gateway", role=Role.GATEWAY, tenants=("acme",)
        )
        out["enforcer"] = enrol_enforcer(
            session, plane.fleet.declared, "eu-west-1-a", "eu-west-1", "test operator"
        )
        out["probe"], _ = create_token(
            session, name="eu-probe", role=Role.PROBE, region="eu-west-1"
        )
    return out


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def client(plane: ControlPlane, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        published = test_client.post(
            "/v1/bundles",
            content=pack_sources(GATEWAY),
            headers={**auth(tokens["author"]), **SOURCES_TYPE},
        )
        assert published.status_code == 201, published.text
        approved = test_client.post(
            f"/v1/rollouts/{published.json()['rollout']['id']}/approve",
            json={},
            headers=auth(tokens["approver"]),
        )
        assert approved.status_code == 200, approved.text
        yield test_client


def forged(**fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "region": "eu-west-1",
        "status": "down",
        "reason": "trust me",
        "observed_at": datetime.now(UTC).isoformat(),
        **fields,
    }


def nothing_stored(plane: ControlPlane) -> None:
    with plane.db.session() as session:
        assert session.scalar(select(func.count()).select_from(TargetHealth)) == 0
        assert outbox.events(session, "model_health.changed") == []


def test_a_non_probe_token_reporting_health_to_steer_traffic_is_forbidden(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    for who in ("gateway", "enforcer", *(role.value for role in PEOPLE)):
        answer = client.post("/v1/health/models", json=forged(), headers=auth(tokens[who]))
        assert answer.status_code == 403, (who, answer.text)
    assert (
        client.post("/v1/health/models", json=forged(), headers=auth("nxp_forged")).status_code
        == 401
    )
    nothing_stored(plane)


def test_a_region_bound_probe_cannot_take_a_model_down_elsewhere(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    for region in ("us-east-1", None):
        answer = client.post(
            "/v1/health/models", json=forged(region=region), headers=auth(tokens["probe"])
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "region_not_bound"
    nothing_stored(plane)


def test_a_probe_token_cannot_publish_approve_or_read_spend(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    probe = auth(tokens["probe"])
    (rollout,) = plane.rollouts.recent(1, diff=False)
    attempts = (
        client.post(
            "/v1/bundles", content=pack_sources(GATEWAY), headers={**probe, **SOURCES_TYPE}
        ),
        client.post(f"/v1/rollouts/{rollout.id}/approve", json={}, headers=probe),
        client.get("/v1/budgets/spend", headers=probe),
        client.post("/v1/usage", json={}, headers=probe),
    )
    for response in attempts:
        assert response.status_code == 403, response.text
