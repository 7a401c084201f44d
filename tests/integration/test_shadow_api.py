"""Putting a published revision in shadow for a region, and serving it to that region only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.rollout.fleet import fleet_yaml
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from tests.conftest import GATEWAY, REGO, TEST_KEY_ID
from tests.fixtures.environment import scope

pytestmark = pytest.mark.opa

CANARY, NEXT = "eu-west-1", "us-east-1"


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    fleet = tmp_path / "fleet.yaml"
    # Two waves and a soak long enough that the canary's revision stays out of the next
    # wave; every publication needs an approver, so a new revision stays unsigned.
    text = fleet_yaml(
        [(CANARY, "eu", 0, [f"{CANARY}-a"]), (NEXT, "us", 1, [f"{NEXT}-a"])], soak_s=86_400
    )
    fleet.write_text(text + "secondApprover: always\n")
    control = create_control_plane(
        ControlSettings(
            database_url=f"sqlite:///{tmp_path / 'cp.db'}",
            signing_key_file=session_keys.signing,
            signing_key_id=TEST_KEY_ID,
            approval_key_file=session_keys.approval,
            fleet_file=fleet,
        ),
        opa=opa,
    )
    yield control
    control.close()


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out = {}
    with plane.db.session() as session:
        for role in Role:
            if role is not Role.ENFORCER:
                out[role.value], _ = create_token(
                    session, name=f"t-{role.value}", role=role, tenants=scope(role)
                )
        for region in (CANARY, NEXT):
            out[region] = enrol_enforcer(
                session, plane.fleet.declared, f"{region}-a", region, "test operator"
            )
    return out


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        yield test_client


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def narrowed_sources(tmp_path: Path) -> bytes:
    """bundles/gateway with web-search made a high-risk tool (each call needs an approval)."""
    copy = tmp_path / "gateway"
    shutil.copytree(GATEWAY, copy)
    bundle = copy / "bundle.yaml"
    bundle.write_text(bundle.read_text().replace("policy: ../../rego", f"policy: {REGO}"))
    tools = copy / "tools.yaml"
    text = tools.read_text()
    marker = "  - id: web-search\n    description: Searches the public web.\n    risk: low\n"
    assert marker in text
    tools.write_text(text.replace(marker, marker.replace("risk: low", "risk: high")))
    return pack_sources(copy)


def publish(client: TestClient, tokens: dict[str, str], sources: bytes) -> dict[str, object]:
    response = client.post(
        "/v1/bundles",
        content=sources,
        headers=auth(tokens["author"], **{"content-type": "application/vnd.nexus.sources+gzip"}),
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def approved(client: TestClient, tokens: dict[str, str], published: dict[str, object]) -> str:
    rollout = published["rollout"]
    assert isinstance(rollout, dict)
    response = client.post(
        f"/v1/rollouts/{rollout['id']}/approve", json={}, headers=auth(tokens["approver"])
    )
    assert response.status_code == 200, response.text
    revision = published["revision"]
    assert isinstance(revision, str)
    return revision


def shadow(client: TestClient, token: str, region: str, revision: str) -> object:
    return client.post(
        "/v1/shadow",
        json={"region": region, "revision": revision, "reason": "judge it on live traffic"},
        headers=auth(token),
    )


def test_a_signed_revision_is_shadowed_in_the_next_wave_and_served_to_its_enforcers_only(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    revision = approved(client, tokens, publish(client, tokens, pack_sources(GATEWAY)))
    answer = shadow(client, tokens["operator"], NEXT, revision)
    assert answer.status_code == 201, answer.text  # type: ignore[attr-defined]
    assert answer.json()["revision"] == revision  # type: ignore[attr-defined]
    assert answer.json()["active_revision"] is None  # type: ignore[attr-defined]

    headers = auth(tokens[NEXT], **{"x-nexus-enforcer": f"{NEXT}-a"})
    served = client.get(f"/v1/opa/shadow/{NEXT}/nexus", headers=headers)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/vnd.openpolicyagent.bundles"
    assert served.headers["etag"] == f'"{revision}"'
    assert served.content == plane.registry.archive(revision), "the signed archive, as any bundle"
    again = client.get(
        f"/v1/opa/shadow/{NEXT}/nexus", headers={**headers, "if-none-match": f'"{revision}"'}
    )
    assert again.status_code == 304
    # The shadow never reaches the region's active bundle.
    assert client.get(f"/v1/opa/bundles/{NEXT}/nexus", headers=headers).status_code == 404
    canary = auth(tokens[CANARY], **{"x-nexus-enforcer": f"{CANARY}-a"})
    assert client.get(f"/v1/opa/shadow/{NEXT}/nexus", headers=canary).status_code == 403
    assert client.get(f"/v1/opa/shadow/{CANARY}/nexus", headers=canary).status_code == 404
    assert client.get(f"/v1/opa/shadow/{NEXT}/nexus-state", headers=headers).status_code == 404

    listed = client.get("/v1/shadow", headers=auth(tokens["compliance"]))
    assert listed.status_code == 200
    assert [s["region"] for s in listed.json()["shadows"]] == [NEXT]

    ended = client.post(
        f"/v1/shadow/{NEXT}/end", json={"reason": "seen enough"}, headers=auth(tokens["operator"])
    )
    assert ended.status_code == 204
    assert client.get(f"/v1/opa/shadow/{NEXT}/nexus", headers=headers).status_code == 404
    again_ended = client.post(f"/v1/shadow/{NEXT}/end", json={}, headers=auth(tokens["operator"]))
    assert again_ended.status_code == 404

    with plane.db.session() as session:
        events = [(e.event_type, e.actor, e.payload) for e in outbox.pending(session)]
    shadowed = [e for e in events if e[0] == "rollout.shadowed"]
    assert len(shadowed) == 1 and shadowed[0][1] == "t-operator"
    assert shadowed[0][2]["region"] == NEXT and shadowed[0][2]["revision"] == revision
    assert [e[0] for e in events if e[0] == "rollout.shadow_ended"] == ["rollout.shadow_ended"]


def test_a_shadow_that_cannot_be_evaluated_is_refused_with_its_reason_and_nothing_recorded(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane, tmp_path: Path
) -> None:
    active = approved(client, tokens, publish(client, tokens, pack_sources(GATEWAY)))
    unsigned = publish(client, tokens, narrowed_sources(tmp_path))["revision"]
    assert isinstance(unsigned, str)
    with plane.db.session() as session:
        before = len(outbox.pending(session))
    cases = [
        ("us-west-9", active, "unknown region"),
        (NEXT, "0" * 64, "not in the registry"),
        (NEXT, unsigned, "not signed yet"),
        (CANARY, active, "already in force"),
    ]
    for region, revision, why in cases:
        answer = shadow(client, tokens["operator"], region, revision)
        assert answer.status_code == 422, (why, answer.text)  # type: ignore[attr-defined]
        assert why in answer.json()["error"]["message"]  # type: ignore[attr-defined]
    for body in (
        {"region": NEXT, "revision": "nope"},
        {"region": "Bad Region", "revision": active},
    ):
        answer = client.post("/v1/shadow", json=body, headers=auth(tokens["operator"]))
        assert answer.status_code == 400, answer.text
    assert shadow(client, tokens["author"], NEXT, active).status_code == 403  # type: ignore[attr-defined]
    with plane.db.session() as session:
        assert len(outbox.pending(session)) == before
