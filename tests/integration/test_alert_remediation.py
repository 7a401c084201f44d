"""Alertmanager's webhook rolls back a rollout and disables a tenant, on SQLite and PostgreSQL.

The control plane's app over each database, posted the webhook's version-4 payloads with a
remediator token (the role Alertmanager is given): each remediation acts as the matching
operator action would, in the token's name with the alert as the reason, and leaves the
same audit event (the outbox row the audit log receives). One expected enforcer never
reports, so a rollout stays rolling until promoted by force.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.budgets import state
from nexus_control.budgets.spend import period_of
from nexus_control.plane import ControlPlane
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.store import outbox
from nexus_control.store.tables import DisabledTenant, RegionTarget
from tests.conftest import GATEWAY
from tests.fixtures.planes import database_url_for, plane_on

pytestmark = pytest.mark.opa

WEBHOOK = "/v1/alerts/webhook"
REMEDIATOR = "alertmanager"


@pytest.fixture(params=["sqlite", "postgres"])
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, session_keys: KeyPaths, opa: Opa
) -> Iterator[ControlPlane]:
    with plane_on(database_url_for(request, tmp_path), session_keys, opa) as control:
        yield control


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        enrol_enforcer(session, plane.fleet.declared, "eu-west-1-a", "eu-west-1", "test operator")
        for name, role in (
            ("alice", Role.AUTHOR),
            ("bob", Role.APPROVER),
            ("olga", Role.OPERATOR),
            (REMEDIATOR, Role.REMEDIATOR),
        ):
            out[role.value], _ = create_token(session, name=name, role=role)
    return out


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        yield test_client


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def _sources(tmp_path: Path, days: int | None) -> bytes:
    """The example bundle's sources, with chat history kept ``days`` (a narrowing change)."""
    if days is None:
        return pack_sources(GATEWAY)
    target = tmp_path / f"gateway-{days}"
    shutil.copytree(GATEWAY, target)
    bundle = target / "bundle.yaml"
    bundle.write_text(bundle.read_text().replace("../../rego", str(GATEWAY.parents[1] / "rego")))
    retention = target / "retention.yaml"
    text = retention.read_text()
    changed = text.replace(
        "  - dataClass: chat-history\n    days: 365",
        f"  - dataClass: chat-history\n    days: {days}",
    )
    assert changed != text
    retention.write_text(changed)
    return pack_sources(target)


def _publish(client: TestClient, tokens: dict[str, str], sources: bytes) -> dict[str, Any]:
    response = client.post(
        "/v1/bundles",
        content=sources,
        headers=_auth(tokens["author"], **{"content-type": "application/vnd.nexus.sources+gzip"}),
    )
    assert response.status_code == 201, response.text
    published: dict[str, Any] = response.json()
    return published


def _in_force(client: TestClient, tokens: dict[str, str], plane: ControlPlane) -> str:
    """Publish the example, approve it and promote it past its silent enforcer."""
    published = _publish(client, tokens, _sources(Path(), None))
    rollout = published["rollout"]["id"]
    approve = client.post(
        f"/v1/rollouts/{rollout}/approve", json={}, headers=_auth(tokens["approver"])
    )
    assert approve.status_code == 200, approve.text
    plane.rollouts.promote(rollout, "olga", force=True)
    revision: str = published["revision"]
    return revision


def _alert(remediation: str, started: datetime, **labels: str) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "NexusTestAlert", "remediation": remediation, **labels},
        "annotations": {"summary": "under test"},
        "startsAt": started.isoformat(),
        "fingerprint": "0123456789abcdef",
    }
    return {"version": "4", "status": "firing", "receiver": "cp", "alerts": [alert]}


def _post(client: TestClient, token: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(WEBHOOK, json=body, headers=_auth(token))
    assert response.status_code == 200, response.text
    done: list[dict[str, Any]] = response.json()["remediations"]
    return done


def _desired(plane: ControlPlane) -> str:
    with plane.db.session() as session:
        target = session.get(RegionTarget, ("eu-west-1", POLICY_BUNDLE))
        assert target is not None
        return target.desired_revision


def test_a_rollback_alert_rolls_back_the_rollout_in_progress_in_the_webhooks_name(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane, tmp_path: Path
) -> None:
    good = _in_force(client, tokens, plane)
    narrowed = _publish(client, tokens, _sources(tmp_path, 300))
    rollout = narrowed["rollout"]["id"]
    assert narrowed["rollout"]["state"] == "rolling"
    assert _desired(plane) == narrowed["revision"]

    # The alert started firing once the rollout was under way: it may be about it.
    alert = _alert("rollback_rollout", datetime.now(UTC))
    (done,) = _post(client, tokens["remediator"], alert)
    assert done == {
        "alert": "NexusTestAlert",
        "remediation": "rollback_rollout",
        "outcome": "rolled_back",
        "rollout": rollout,
        "tenant": None,
        "detail": None,
    }
    assert plane.rollouts.get(rollout)[0].state.value == "rolled_back"
    assert _desired(plane) == good
    with plane.db.session() as session:
        (event,) = outbox.events(session, "rollout.rolled_back")
        assert event.actor == REMEDIATOR
        assert event.payload["rollout"] == rollout
        assert "alert NexusTestAlert: under test" in event.payload["detail"]

    # Sent again (Alertmanager repeats a firing alert): nothing is in progress any more.
    (again,) = _post(client, tokens["remediator"], alert)
    assert again["outcome"] == "no rollout in progress"

    # A fix published while the alert still fires is newer than the alert: left alone.
    fixed = _publish(client, tokens, _sources(tmp_path, 200))
    (left,) = _post(client, tokens["operator"], alert)
    assert left["outcome"] == "newer than the alert"
    assert plane.rollouts.get(fixed["rollout"]["id"])[0].state.value == "rolling"
    assert _desired(plane) == fixed["revision"]


def test_a_disable_alert_disables_its_tenant_for_the_period_as_a_hard_cap_would(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    _in_force(client, tokens, plane)
    period = period_of(datetime.now(UTC))
    alert = _alert("disable_tenant", datetime.now(UTC), tenant="globex")
    (done,) = _post(client, tokens["remediator"], alert)
    assert (done["outcome"], done["tenant"]) == ("disabled", "globex")
    with plane.db.session() as session:
        row = session.get(DisabledTenant, ("globex", period))
        assert row is not None and "alert NexusTestAlert" in row.reason
        (event,) = outbox.events(session, "tenant.disabled")
        assert event.actor == REMEDIATOR
        assert event.payload == {
            "tenant": "globex",
            "period": period,
            "reason": row.reason,
            "alert": "NexusTestAlert",
        }
        # The state bundle enforcers poll already refuses the tenant.
        current = state.current_state(session)
        assert current is not None and "globex" in current.data["disabled"]

    (again,) = _post(client, tokens["remediator"], alert)
    assert again["outcome"] == "already disabled"
    overview = client.get("/v1/budgets", headers=_auth(tokens["operator"])).json()
    states = {t["tenant"]: t["state"] for t in overview["tenants"]}
    assert states["globex"] == "disabled"
    assert [t for t, s in states.items() if s == "disabled"] == ["globex"]
