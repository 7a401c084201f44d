"""The control plane's /metrics through its API: per-enforcer series, lag and spend.

A control plane on SQLite expecting one enforcer (eu-west-1-a), which polls and reports
status through the real routes; usage through POST /v1/usage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.budgets.metrics import ANOMALY_SCOPES, BudgetGauges
from nexus_control.plane import ControlPlane
from nexus_control.rollout.states import RolloutState
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from nexus_control.store.tables import RegionTarget
from tests.conftest import GATEWAY, TEST_KEY_ID
from tests.fixtures.environment import eventually, scope

pytestmark = pytest.mark.opa

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.M)


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        signing_key_file=session_keys.signing,
        signing_key_id=TEST_KEY_ID,
        approval_key_file=session_keys.approval,
        regions=["eu-west-1"],
        metric_tenants="acme",  # type: ignore[arg-type]  # as NEXUS_METRIC_TENANTS reads
    )
    control = create_control_plane(settings, opa=opa)
    assert control.budget_gauges.tenants == ("acme",)
    # Every scrape computes the overview afresh (the TTL is proven in tests/unit/control).
    control.budget_gauges = BudgetGauges(control.budgets.overview, ("acme",), ttl_s=0)
    yield control
    control.close()


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out = {}
    with plane.db.session() as session:
        out["enforcer"] = enrol_enforcer(
            session, plane.fleet.declared, "eu-west-1-a", "eu-west-1", "test operator"
        )
        for role in (Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.GATEWAY):
            out[role.value], _ = create_token(
                session, name=f"t-{role.value}", role=role, tenants=scope(role)
            )
    return out


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        yield test_client


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def _labels(**values: str) -> str:
    """A sample's labels as prometheus_client writes them (sorted by name)."""
    return ",".join(f'{name}="{value}"' for name, value in sorted(values.items()))


def _scrape(client: TestClient, tokens: dict[str, str]) -> dict[str, dict[str, float]]:
    """Family → the labels text of each sample → its value."""
    response = client.get("/metrics", headers=_auth(tokens["operator"]))
    assert response.status_code == 200, response.text
    out: dict[str, dict[str, float]] = {}
    for match in SAMPLE.finditer(response.text):
        out.setdefault(match["name"], {})[match["labels"] or ""] = float(match["value"])
    return out


def test_metrics_follow_an_enforcer_from_expected_to_converged_and_spend_to_its_cap(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    assert client.get("/metrics", headers=_auth(tokens["author"])).status_code == 403
    first = _scrape(client, tokens)
    assert first["nexus_enforcer_info"] == {
        _labels(
            region="eu-west-1",
            enforcer="eu-west-1-a",
            held_revision="",
            active_revision="",
            state="down",
        ): 1.0
    }
    assert "nexus_enforcer_last_seen_age_seconds" not in first, "never seen: no age"
    assert first["nexus_region_convergence_lag_seconds"] == {'region="eu-west-1"': 0.0}
    assert first["nexus_budget_tenants"] == {
        f'state="{s}"': 0.0 for s in ("under", "soft", "hard", "disabled")
    }
    assert first["nexus_spend_anomalies"] == {f'scope="{s}"': 0.0 for s in ANOMALY_SCOPES}
    assert first["nexus_budget_platform_spend_usd"] == {"": 0.0}
    assert "nexus_tool_risk_info" not in first, "no policy in force: no tool risks"

    published = client.post(
        "/v1/bundles",
        content=pack_sources(GATEWAY),
        headers=_auth(tokens["author"], **{"content-type": "application/vnd.nexus.sources+gzip"}),
    ).json()
    revision, rollout = published["revision"], published["rollout"]["id"]
    approver = _auth(tokens["approver"])
    approved = client.post(f"/v1/rollouts/{rollout}/approve", json={}, headers=approver)
    assert approved.status_code == 200, approved.text
    with plane.db.session() as session:
        target = session.get(RegionTarget, ("eu-west-1", POLICY_BUNDLE))
        assert target is not None and target.desired_revision == revision
        target.updated_at = datetime.now(UTC) - timedelta(minutes=10)
    lagging = _scrape(client, tokens)
    # No audit log drains this plane: every event recorded so far is pending.
    with plane.db.session() as session:
        waiting = len(outbox.events(session))
    assert waiting > 0 and outbox.count_pending(plane.db) == waiting
    assert lagging["nexus_region_convergence_lag_seconds"]['region="eu-west-1"'] >= 600
    risks = lagging["nexus_tool_risk_info"]
    assert risks[_labels(tool="web-search", risk="low")] == 1.0
    assert {k for k in risks if 'risk="high"' in k or 'risk="critical"' in k}, "the alert's join"

    enforcer = _auth(tokens["enforcer"], **{"x-nexus-enforcer": "eu-west-1-a"})
    assert client.get("/v1/opa/bundles/eu-west-1/nexus", headers=enforcer).status_code == 200
    holds = {**enforcer, "if-none-match": f'"{revision}"'}
    assert client.get("/v1/opa/bundles/eu-west-1/nexus", headers=holds).status_code == 304
    report = {
        "labels": {"region": "eu-west-1", "enforcer": "eu-west-1-a", "id": "x"},
        "bundles": {"nexus": {"name": "nexus", "active_revision": revision}},
    }
    assert client.post("/v1/opa/status", json=report, headers=enforcer).status_code == 204
    converged = _scrape(client, tokens)
    assert converged["nexus_region_convergence_lag_seconds"] == {'region="eu-west-1"': 0.0}
    assert converged["nexus_enforcer_info"] == {
        _labels(
            region="eu-west-1",
            enforcer="eu-west-1-a",
            held_revision=revision,
            active_revision=revision,
            state="active",
        ): 1.0
    }
    (age,) = converged["nexus_enforcer_last_seen_age_seconds"].values()
    assert 0 <= age < 60

    # Converged with no soak: the engine completes the rollout, and its policy is in force.
    eventually(lambda: plane.rollouts.get(rollout)[0].state is RolloutState.COMPLETED)
    for tenant, cost in (("acme", 2.5), ("globex", 4.0)):
        body = {
            "request_id": f"req-{tenant}-0001",
            "tenant": tenant,
            "model": "gpt-4o",
            "tokens": 10,
            "cost_usd": cost,
        }
        counted = client.post("/v1/usage", json=body, headers=_auth(tokens["gateway"]))
        assert counted.status_code == 202, counted.text
    spent = _scrape(client, tokens)
    assert spent["nexus_budget_spend_usd"] == {'tenant="acme"': 2.5}, "only the watched tenant"
    (cap,) = spent["nexus_budget_cap_usd"].values()
    assert spent["nexus_budget_spend_ratio"]['tenant="acme"'] == pytest.approx(2.5 / cap)
    assert spent["nexus_budget_platform_spend_usd"] == {"": 6.5}
    config = plane.rollouts.config_in_force()
    assert sum(spent["nexus_budget_tenants"].values()) == len(config["tenants"])
