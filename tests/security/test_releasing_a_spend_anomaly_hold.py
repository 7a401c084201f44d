"""An insider lifts a tenant's spend-anomaly hold to let it spend on as before: only an
approver may, only with a reason, and every release is an audit event.

On the control plane over SQLite and a real PostgreSQL, with the example bundle in force
(stark's budget holds chats on models above $5 per million tokens while held): the author,
the operator, compliance, a finops and a gateway token scoped to stark, a probe and an
enforcer may not release the hold (403) — it stays in the state bundle, nothing is
audited; an approver without a reason is 400; an approver with one releases it, once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.sources import pack_sources
from nexus_control.budgets import holds, state
from nexus_control.plane import ControlPlane
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.store import outbox
from tests.conftest import GATEWAY

pytestmark = pytest.mark.opa

SOURCES_TYPE = {"content-type": "application/vnd.nexus.sources+gzip"}
RELEASE = "/v1/budgets/anomaly-holds/stark/release"
REASON = {"reason": "planned launch spend"}


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        for role in (Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE):
            out[role.value], _ = create_token(session, name=f"mallory-{role.value}", role=role)
        for role in (Role.GATEWAY, Role.FINOPS):
            out[role.value], _ = create_token(
                session, name=f"mallory-{role.value}", role=role, tenants=("stark",)
            )
        out["probe"], _ = create_token(session, name="probe", role=Role.PROBE)
        out["enforcer"] = enrol_enforcer(
            session, plane.fleet.declared, "eu-west-1-a", "eu-west-1", "test operator"
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
        config = plane.budgets.config_or_none()
        assert config is not None
        action = config["tenants"]["stark"]["budget"]["on_anomaly"]
        with plane.db.session() as session:
            assert holds.hold(
                session, tenant="stark", day="2026-12-01", kind="spike", action=action, actor="t"
            )
        plane.budgets.rebuild()
        yield test_client


def held_in_state(plane: ControlPlane) -> bool:
    plane.budgets.rebuild()
    with plane.db.session() as session:
        row = state.current_state(session)
        assert row is not None
        return "stark" in row.data.get("anomaly_holds", {})


def releases(plane: ControlPlane) -> int:
    with plane.db.session() as session:
        return len(outbox.events(session, holds.RELEASED))


@pytest.mark.parametrize(
    "who", ["author", "operator", "compliance", "gateway", "finops", "probe", "enforcer"]
)
def test_no_one_but_an_approver_can_release_a_tenants_spend_anomaly_hold(
    client: TestClient, plane: ControlPlane, tokens: dict[str, str], who: str
) -> None:
    refused = client.post(RELEASE, json=REASON, headers=auth(tokens[who]))
    assert refused.status_code == 403, refused.text
    assert held_in_state(plane)
    assert releases(plane) == 0


def test_an_approver_cannot_release_a_hold_without_saying_why(
    client: TestClient, plane: ControlPlane, tokens: dict[str, str]
) -> None:
    for body in ({}, {"reason": " "}, {"reason": "ok", "tenant": "acme"}, {"reason": "x" * 301}):
        refused = client.post(RELEASE, json=body, headers=auth(tokens["approver"]))
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["code"] == "invalid_release"
    assert held_in_state(plane)
    assert releases(plane) == 0


def test_an_approvers_release_is_audited_once_and_leaves_the_state(
    client: TestClient, plane: ControlPlane, tokens: dict[str, str]
) -> None:
    listed = client.get("/v1/budgets/anomaly-holds", headers=auth(tokens["operator"]))
    assert [h["tenant"] for h in listed.json()["holds"]] == ["stark"]
    released = client.post(RELEASE, json=REASON, headers=auth(tokens["approver"]))
    assert released.status_code == 200, released.text
    assert released.json()["kind"] == "spike"
    assert not held_in_state(plane)
    with plane.db.session() as session:
        (event,) = outbox.events(session, holds.RELEASED)
    assert event.actor == "mallory-approver"
    assert event.payload["reason"] == REASON["reason"]
    again = client.post(RELEASE, json=REASON, headers=auth(tokens["approver"]))
    assert again.status_code == 404, again.text
    assert again.json()["error"]["code"] == "no_anomaly_hold"
    assert releases(plane) == 1
