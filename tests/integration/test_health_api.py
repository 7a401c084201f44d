"""Provider and model health through the API, on SQLite and PostgreSQL: a probe's report is
kept, each change of status is one audit event with its controls, and a degraded model is in
the state bundle at once; a healthy report takes it out again. Reading needs a reader role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from nexus_audit.events import controls_for
from nexus_control.access.tokens import TENANT_SCOPED_ROLES, Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.sources import pack_sources
from nexus_control.budgets.state import current_state
from nexus_control.plane import ControlPlane
from nexus_control.store import outbox
from tests.conftest import GATEWAY

pytestmark = pytest.mark.opa


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        for role in Role:
            if role is Role.ENFORCER:
                continue
            out[role.value], _ = create_token(
                session,
                name=f"t-{role.value}",
                role=role,
                tenants=("acme",) if role in TENANT_SCOPED_ROLES else (),
            )
        out["probe-eu"], _ = create_token(
            session, name="probe-eu", role=Role.PROBE, region="eu-west-1"
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
            headers={
                **auth(tokens["author"]),
                "content-type": "application/vnd.nexus.sources+gzip",
            },
        )
        assert published.status_code == 201, published.text
        approved = test_client.post(
            f"/v1/rollouts/{published.json()['rollout']['id']}/approve",
            json={},
            headers=auth(tokens["approver"]),
        )
        assert approved.status_code == 200, approved.text
        yield test_client


def report(client: TestClient, token: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "region": "eu-west-1",
        "status": "degraded",
        "reason": "p95 latency 9.2 s over 5 min",
        "observed_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    return client.post("/v1/health/models", json=body, headers=auth(token))


def health_in_state(plane: ControlPlane) -> Any:
    with plane.db.session() as session:
        row = current_state(session)
        assert row is not None
        return row.data.get("health")


def health_events(plane: ControlPlane) -> list[tuple[str, str, tuple[str, ...]]]:
    """(previous, status, controls) of every ``model_health.changed`` event, in order."""
    with plane.db.session() as session:
        return [
            (e.payload["previous"], e.payload["status"], controls_for(e.event_type))
            for e in outbox.events(session, "model_health.changed")
        ]


def test_a_degraded_model_is_in_the_state_bundle_and_audited_until_reported_healthy(
    plane: ControlPlane, client: TestClient, tokens: dict[str, str]
) -> None:
    answer = report(client, tokens["probe-eu"])
    assert answer.status_code == 202, answer.text
    assert answer.json()["changed"] is True
    health = health_in_state(plane)
    assert health["models"]["gpt-4o"]["eu-west-1"]["status"] == "degraded"
    assert health["models"]["gpt-4o"]["eu-west-1"]["reason"] == "p95 latency 9.2 s over 5 min"

    again = report(client, tokens["probe-eu"])
    assert again.json()["changed"] is False
    assert len(health_events(plane)) == 1

    healed = report(client, tokens["probe-eu"], status="healthy", reason="p95 1.1 s")
    assert healed.json()["changed"] is True
    assert health_in_state(plane) is None
    events = health_events(plane)
    controls = ("SOC2:A1.2", "ISO27001:A.5.30", "ISO27001:A.8.14")
    assert events == [("healthy", "degraded", controls), ("degraded", "healthy", controls)]
    listed = client.get("/v1/health/models", headers=auth(tokens["operator"]))
    assert listed.status_code == 200
    assert [(t["target"], t["region"], t["status"]) for t in listed.json()["targets"]] == [
        ("gpt-4o", "eu-west-1", "healthy")
    ]


def test_a_provider_down_everywhere_is_in_the_state_bundle(
    plane: ControlPlane, client: TestClient, tokens: dict[str, str]
) -> None:
    answer = report(
        client, tokens["probe"], model=None, provider="openai", region=None, status="down"
    )
    assert answer.status_code == 202, answer.text
    assert health_in_state(plane)["providers"]["openai"]["*"]["status"] == "down"


def test_an_older_observation_after_a_newer_one_changes_nothing(
    plane: ControlPlane, client: TestClient, tokens: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    assert report(client, tokens["probe"], observed_at=now.isoformat()).status_code == 202
    late = report(
        client,
        tokens["probe"],
        status="healthy",
        observed_at=(now - timedelta(seconds=30)).isoformat(),
    )
    assert late.status_code == 202 and late.json()["applied"] is False
    assert health_in_state(plane)["models"]["gpt-4o"]["eu-west-1"]["status"] == "degraded"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model": "gpt-9"}, "unknown_model"),
        ({"model": None, "provider": "nobody"}, "unknown_provider"),
        ({"region": "mars-1"}, "unknown_region"),
        ({"status": "on-fire"}, "invalid_health"),
        ({"model": None}, "invalid_health"),
        ({"provider": "openai"}, "invalid_health"),
        ({"reason": "x" * 301}, "invalid_health"),
        ({"observed_at": "2026-01-01T00:00:00"}, "invalid_health"),
        (
            {"observed_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
            "observed_in_future",
        ),
        (
            {"observed_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat()},
            "observation_stale",
        ),
    ],
)
def test_bad_health_reports_are_refused_with_a_reason_and_change_nothing(
    plane: ControlPlane,
    client: TestClient,
    tokens: dict[str, str],
    fields: dict[str, Any],
    code: str,
) -> None:
    answer = report(client, tokens["probe"], **fields)
    # A body that does not parse is 400 (as every intake answers); one that names what the
    # policy does not know, or a time that cannot be, is 422.
    assert answer.status_code == (400 if code == "invalid_health" else 422), answer.text
    assert answer.json()["error"]["code"] == code, answer.text
    assert health_events(plane) == []
    assert health_in_state(plane) is None


def test_an_oversized_body_is_refused_before_it_is_read(
    client: TestClient, tokens: dict[str, str]
) -> None:
    answer = client.post(
        "/v1/health/models",
        content=b"{" + b" " * 8192 + b"}",
        headers={**auth(tokens["probe"]), "content-type": "application/json"},
    )
    assert answer.status_code == 413, answer.text
