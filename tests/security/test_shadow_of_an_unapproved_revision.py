"""The attack: an operator (or the author) puts a revision no approver signed in shadow,
so that enforcers would download and evaluate unreviewed policy beside the one in force.

A shadow candidate must already be signed, i.e. approved: the control plane refuses to
assign an unsigned one and serves nothing for it; an enforcer would refuse an unsigned
candidate anyway (the plugin's signature test, extauthz/shadow_test.go).
"""

from __future__ import annotations

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
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from tests.conftest import GATEWAY, TEST_KEY_ID
from tests.fixtures.environment import scope

pytestmark = pytest.mark.opa

REGION = "eu-west-1"


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    control = create_control_plane(
        ControlSettings(
            database_url=f"sqlite:///{tmp_path / 'cp.db'}",
            signing_key_file=session_keys.signing,
            signing_key_id=TEST_KEY_ID,
            approval_key_file=session_keys.approval,
            regions=[REGION],
        ),
        opa=opa,
    )
    yield control
    control.close()


def test_an_unapproved_revision_cannot_be_put_in_shadow_or_served_as_one(
    plane: ControlPlane,
) -> None:
    tokens = {}
    with plane.db.session() as session:
        for role in (Role.AUTHOR, Role.OPERATOR):
            tokens[role.value], _ = create_token(
                session, name=f"t-{role.value}", role=role, tenants=scope(role)
            )
        enforcer = enrol_enforcer(session, plane.fleet.declared, f"{REGION}-a", REGION, "op")
    with TestClient(create_app(plane)) as client:
        published = client.post(
            "/v1/bundles",
            content=pack_sources(GATEWAY),
            headers={
                "authorization": f"Bearer {tokens['author']}",
                "content-type": "application/vnd.nexus.sources+gzip",
            },
        ).json()
        assert published["rollout"]["state"] == "pending_approval", "no approver has signed it"
        revision = published["revision"]
        with plane.db.session() as session:
            recorded = len(outbox.pending(session))
        ask = {"region": REGION, "revision": revision, "reason": "just a look"}
        as_operator = client.post(
            "/v1/shadow", json=ask, headers={"authorization": f"Bearer {tokens['operator']}"}
        )
        assert as_operator.status_code == 422
        assert "not signed yet" in as_operator.json()["error"]["message"]
        as_author = client.post(
            "/v1/shadow", json=ask, headers={"authorization": f"Bearer {tokens['author']}"}
        )
        assert as_author.status_code == 403, "shadowing is the operator's, never the author's"
        polled = client.get(
            f"/v1/opa/shadow/{REGION}/nexus",
            headers={"authorization": f"Bearer {enforcer}", "x-nexus-enforcer": f"{REGION}-a"},
        )
        assert polled.status_code == 404, "no enforcer receives the unapproved revision"
        with plane.db.session() as session:
            assert len(outbox.pending(session)) == recorded, "nothing was recorded as shadowed"
