"""The control plane API refuses bad input with a clear 4xx and loses nothing."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.bundle import BuiltBundle
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_control.store.tables import BundleRevision, EnforcerBundle
from tests.conftest import GATEWAY, TEST_KEY_ID
from tests.fixtures.environment import scope

pytestmark = pytest.mark.opa


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        signing_key_file=session_keys.signing,
        signing_key_id=TEST_KEY_ID,
        approval_key_file=session_keys.approval,
        regions=["eu-west-1"],
    )
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out = {}
    with plane.db.session() as session:
        for role in Role:
            if role is Role.ENFORCER:
                out[role.value] = enrol_enforcer(
                    session, plane.fleet.declared, "eu-west-1-a", "eu-west-1", "test operator"
                )
                continue
            out[role.value], _ = create_token(
                session, name=f"t-{role.value}", role=role, tenants=scope(role)
            )
    return out


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        yield test_client


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def usage(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "request_id": f"req-{uuid.uuid4()}",
        "tenant": "acme",
        "model": "gpt-4o",
        "tokens": 10,
        "cost_usd": 1.5,
    }
    body.update(overrides)
    return body


@functools.cache
def gateway_sources() -> bytes:
    """bundles/gateway's sources, as `nexus-policy publish` sends them."""
    return pack_sources(GATEWAY)


def publish(client: TestClient, tokens: dict[str, str], sources: bytes) -> object:
    return client.post(
        "/v1/bundles",
        content=sources,
        headers=auth(tokens["author"], **{"content-type": "application/vnd.nexus.sources+gzip"}),
    )


def test_publish_stores_the_revision_once(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle
) -> None:
    archive = gateway_sources()
    first = publish(client, tokens, archive)
    second = publish(client, tokens, archive)
    assert first.status_code == 201 and first.json()["created"] is True  # type: ignore[attr-defined]
    assert second.json()["created"] is False  # type: ignore[attr-defined]
    assert second.json()["revision"] == built_gateway.revision  # type: ignore[attr-defined]


def test_publish_refuses_a_built_archive_and_garbage(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle, plane: ControlPlane
) -> None:
    response = publish(client, tokens, built_gateway.path.read_bytes())
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "not a sources archive" in response.json()["error"]["message"]  # type: ignore[attr-defined]
    garbage = publish(client, tokens, b"not a tarball")
    assert garbage.status_code == 422  # type: ignore[attr-defined]
    with plane.db.session() as session:
        assert session.query(BundleRevision).count() == 0


def test_usage_bad_input(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle, plane: ControlPlane
) -> None:
    published = publish(client, tokens, gateway_sources())
    gateway = auth(tokens["gateway"])
    waiting = client.post("/v1/usage", json=usage(), headers=gateway)
    assert waiting.status_code == 409, "an unapproved publication is not in force"
    rollout = published.json()["rollout"]  # type: ignore[attr-defined]
    client.post(f"/v1/rollouts/{rollout['id']}/approve", json={}, headers=auth(tokens["approver"]))
    assert client.post("/v1/usage", content=b"{", headers=gateway).status_code == 400
    malformed = client.post("/v1/usage", json=usage(cost_usd="lots"), headers=gateway)
    assert malformed.status_code == 400
    assert "cost_usd" in malformed.json()["error"]["message"]
    assert client.post("/v1/usage", json=usage(extra=1), headers=gateway).status_code == 400
    outside = client.post("/v1/usage", json=usage(tenant="nobody"), headers=gateway)
    assert outside.status_code == 403, "a tenant outside the token's scope"
    with plane.db.session() as session:
        nobodys, _ = create_token(session, name="t-nobody", role=Role.GATEWAY, tenants=["nobody"])
    unknown = client.post("/v1/usage", json=usage(tenant="nobody"), headers=auth(nobodys))
    assert unknown.status_code == 422 and "unknown tenant" in unknown.json()["error"]["message"]
    big = client.post("/v1/usage", content=b"x" * 20_000, headers=gateway)
    assert big.status_code == 413
    assert client.post("/v1/usage", json=usage(), headers=auth("nxp_wrong")).status_code == 401
    assert client.post("/v1/usage", json=usage()).status_code == 401
    assert client.post("/v1/usage", json=usage(), headers=auth(tokens["author"])).status_code == 403
    ok = client.post("/v1/usage", json=usage(), headers=gateway)
    assert ok.status_code == 202 and ok.json()["counted"] is True


def test_rollout_requests_that_cannot_be_done_change_nothing(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle
) -> None:
    published = publish(client, tokens, gateway_sources())
    rollout_id = published.json()["rollout"]["id"]  # type: ignore[attr-defined]
    operator = auth(tokens["operator"])
    own = client.post(
        f"/v1/rollouts/{rollout_id}/approve", json={}, headers=auth(tokens["approver"])
    )
    assert own.status_code == 200, "a different person approves"
    before = client.get(f"/v1/rollouts/{rollout_id}", headers=operator).json()
    past = client.post(f"/v1/rollouts/{rollout_id}/rollback", json={}, headers=operator)
    assert past.status_code == 409
    assert "no earlier good revision" in past.json()["error"]["message"]
    assert client.post("/v1/rollouts/4242/promote", json={}, headers=operator).status_code == 404
    unconverged = client.post(f"/v1/rollouts/{rollout_id}/promote", json={}, headers=operator)
    assert unconverged.status_code == 409
    assert (
        client.post(f"/v1/rollouts/{rollout_id}/resume", json={}, headers=operator).status_code
        == 409
    )
    bad = client.post(f"/v1/rollouts/{rollout_id}/pause", json={"why": 1}, headers=operator)
    assert bad.status_code == 400
    after = client.get(f"/v1/rollouts/{rollout_id}", headers=operator).json()
    assert after == before


def test_a_rollouts_diff_is_served_in_pages_and_bad_pages_are_refused(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle
) -> None:
    rollout_id = publish(client, tokens, gateway_sources()).json()["rollout"]["id"]  # type: ignore[attr-defined]
    reader = auth(tokens["operator"])
    whole = client.get(f"/v1/rollouts/{rollout_id}", headers=reader).json()["diff"]["changes"]
    url = f"/v1/rollouts/{rollout_id}/changes"
    listed, after = [], None
    while True:
        page = client.get(url, params={"limit": 9, "after": after or ""}, headers=reader).json()
        assert len(page["changes"]) <= 9 and page["position"] == len(listed)
        listed += page["changes"]
        if (after := page["next_after"]) is None:
            break
    assert page["summary"]["total"] == len(whole) == len(listed) > 9
    rank = {"widens": 0, "narrows": 1, "neutral": 2}
    expected = sorted(whole, key=lambda c: rank[c["effect"]])
    assert [{k: c[k] for k in ("area", "subject", "detail", "effect")} for c in listed] == expected
    widening = client.get(url, params={"effect": "widens", "limit": 500}, headers=reader).json()
    assert {c["effect"] for c in widening["changes"]} == {"widens"}
    assert widening["of"] == widening["summary"]["counts"]["widens"]
    for params, why in (
        ({"after": "abc"}, "after: 'abc' is not a whole number"),
        ({"limit": "0"}, "limit: 0 is not a whole number from 1 to 500"),
        ({"effect": "wider"}, "effect: 'wider' is not one of"),
        ({"after": "x" * 41}, "after"),
    ):
        refused = client.get(url, params=params, headers=reader)
        assert refused.status_code == 400, params
        assert why in refused.json()["error"]["message"]
    missing = client.get("/v1/rollouts/4242/changes", headers=reader)
    assert missing.status_code == 404 and "no rollout 4242" in missing.json()["error"]["message"]
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth(tokens["gateway"])).status_code == 403


def test_author_cannot_approve_their_own_change(
    client: TestClient, plane: ControlPlane, tokens: dict[str, str], built_gateway: BuiltBundle
) -> None:
    published = publish(client, tokens, gateway_sources())
    rollout_id = published.json()["rollout"]["id"]  # type: ignore[attr-defined]
    with plane.db.session() as session:
        same_person, _ = create_token(session, name="t-author", role=Role.APPROVER)
    refused = client.post(f"/v1/rollouts/{rollout_id}/approve", json={}, headers=auth(same_person))
    assert refused.status_code == 403
    assert "author" in refused.json()["error"]["message"]
    state = client.get(f"/v1/rollouts/{rollout_id}", headers=auth(tokens["operator"])).json()
    assert state["state"] == "pending_approval"


def test_usage_before_any_policy_is_a_conflict(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post("/v1/usage", json=usage(), headers=auth(tokens["gateway"]))
    assert response.status_code == 409


def status_report(**bundle: object) -> dict[str, object]:
    return {
        "labels": {"region": "eu-west-1", "enforcer": "eu-west-1-a", "id": "x"},
        "bundles": {"nexus": {"name": "nexus", **bundle}},
    }


def test_status_intake(client: TestClient, tokens: dict[str, str], plane: ControlPlane) -> None:
    headers = auth(tokens["enforcer"], **{"x-nexus-enforcer": "eu-west-1-a"})
    ok = client.post("/v1/opa/status", json=status_report(active_revision="r1"), headers=headers)
    assert ok.status_code == 204
    failed = client.post(
        "/v1/opa/status",
        json=status_report(
            active_revision="r1",
            code="bundle_error",
            message="activation failed",
            errors=[{"code": "rego_parse_error", "message": "bad"}],
        ),
        headers=headers,
    )
    assert failed.status_code == 204
    with plane.db.session() as session:
        row = session.get(EnforcerBundle, ("eu-west-1-a", "nexus"))
        assert row is not None and row.active_revision == "r1"
        assert row.error_code == "bundle_error" and "bad" in (row.error_message or "")
    gz = client.post(
        "/v1/opa/status",
        content=gzip.compress(json.dumps(status_report()).encode()),
        headers={**headers, "content-encoding": "gzip", "content-type": "application/json"},
    )
    assert gz.status_code == 204


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{", {}, 400),
        (json.dumps({"bundles": {}}).encode(), {}, 400),
        (json.dumps({"labels": {"region": "us-east-1"}}).encode(), {}, 403),
        (json.dumps({"labels": {"enforcer": "someone-else"}}).encode(), {}, 403),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, 400),
        (gzip.compress(b"x" * 2_000_000, mtime=0), {"content-encoding": "gzip"}, 413),
        (json.dumps(status_report()).encode(), {"x-nexus-enforcer": ""}, 400),
    ],
)
def test_status_bad_input(
    client: TestClient, tokens: dict[str, str], body: bytes, headers: dict[str, str], status: int
) -> None:
    sent = auth(tokens["enforcer"], **{"x-nexus-enforcer": "eu-west-1-a", **headers})
    assert client.post("/v1/opa/status", content=body, headers=sent).status_code == status


def test_bundle_endpoint_checks_the_enforcer_and_its_region(
    client: TestClient, tokens: dict[str, str], built_gateway: BuiltBundle
) -> None:
    published = publish(client, tokens, gateway_sources())
    rollout = published.json()["rollout"]  # type: ignore[attr-defined]
    pending = client.get(
        "/v1/opa/bundles/eu-west-1/nexus",
        headers=auth(tokens["enforcer"], **{"x-nexus-enforcer": "eu-west-1-a"}),
    )
    assert pending.status_code == 404, "nothing is served before the approval"
    approved = client.post(
        f"/v1/rollouts/{rollout['id']}/approve", json={}, headers=auth(tokens["approver"])
    )
    assert approved.status_code == 200
    headers = auth(tokens["enforcer"], **{"x-nexus-enforcer": "eu-west-1-a"})
    ok = client.get("/v1/opa/bundles/eu-west-1/nexus", headers=headers)
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/vnd.openpolicyagent.bundles"
    assert ok.headers["etag"] == f'"{built_gateway.revision}"'
    same = client.get(
        "/v1/opa/bundles/eu-west-1/nexus",
        headers={**headers, "if-none-match": f'"{built_gateway.revision}"'},
    )
    assert same.status_code == 304
    assert client.get("/v1/opa/bundles/us-east-1/nexus", headers=headers).status_code == 403
    assert client.get("/v1/opa/bundles/eu-west-1/other", headers=headers).status_code == 404
    assert (
        client.get("/v1/opa/bundles/eu-west-1/nexus", headers=auth(tokens["enforcer"])).status_code
        == 400
    )
    assert (
        client.get("/v1/opa/bundles/eu-west-1/nexus", headers=auth(tokens["gateway"])).status_code
        == 403
    )


def test_usage_reports_past_the_intake_threshold_get_429_and_nothing_accepted_is_lost(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    published = publish(client, tokens, gateway_sources())
    rollout = published.json()["rollout"]  # type: ignore[attr-defined]
    client.post(f"/v1/rollouts/{rollout['id']}/approve", json={}, headers=auth(tokens["approver"]))
    gateway = auth(tokens["gateway"])
    gate = plane.usage_gate
    accepted = [client.post("/v1/usage", json=usage(cost_usd=2.0), headers=gateway)]
    with contextlib.ExitStack() as held:
        # The intake is busy with as many reports as it takes at once.
        for _ in range(gate.max_in_flight):
            held.enter_context(gate.admit())
        busy = client.post("/v1/usage", json=usage(cost_usd=100.0), headers=gateway)
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == str(gate.retry_after_s)
        assert busy.json()["error"]["code"] == "busy"
        scraped = client.get("/metrics", headers=auth(tokens["operator"])).text
        assert f"nexus_usage_reports_in_flight {float(gate.max_in_flight)}" in scraped
        assert "nexus_usage_reports_refused_total 1.0" in scraped
    # Retried once the intake has room, as a gateway does after retry-after.
    accepted.append(client.post("/v1/usage", json=usage(cost_usd=3.0), headers=gateway))
    assert [r.status_code for r in accepted] == [202, 202]
    assert all(r.json()["counted"] for r in accepted)
    assert gate.in_flight == 0
    # Exactly the accepted reports are counted; the refused one left no trace.
    totals = plane.budgets.spend.totals(accepted[0].json()["period"])
    assert totals["acme"].total == pytest.approx(5.0)
