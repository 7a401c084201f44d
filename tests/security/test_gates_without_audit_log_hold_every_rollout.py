"""An operator who serves the control plane without its audit log, so no gate can replay.

Replay reads recorded decisions from the co-located audit log. A fleet that
declares replay gates and a plane served without that log must not let a
change through unjudged: the rollout is held, with the reason, and no wave
starts.
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
from nexus_control.rollout.fleet import fleet_yaml
from nexus_control.settings import ControlSettings
from nexus_control.store.tables import RegionTarget
from tests.fixtures.environment import GATEWAY, KEY_ID

pytestmark = pytest.mark.opa


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        fleet_yaml([("eu-west-1", "eu", 0, ["eu-west-1-1"])], soak_s=0)
        + "replayGates:\n  denyToAllowMax: 0\n"
    )
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        signing_key_file=session_keys.signing,
        signing_key_id=KEY_ID,
        approval_key_file=session_keys.approval,
        fleet_file=fleet,
    )
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()


def test_gates_without_audit_log_hold_every_rollout(plane: ControlPlane) -> None:
    with plane.db.session() as session:
        token, _ = create_token(session, name="t-author", role=Role.AUTHOR)
        approver, _ = create_token(session, name="t-approver", role=Role.APPROVER)
    with TestClient(create_app(plane)) as client:
        response = client.post(
            "/v1/bundles",
            content=pack_sources(GATEWAY),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/vnd.nexus.sources+gzip",
            },
        )
        assert response.status_code == 201, response.text
        rollout = response.json()["rollout"]
        if rollout["state"] == "pending_approval":
            approved = client.post(
                f"/v1/rollouts/{rollout['id']}/approve",
                json={"comment": "reviewed"},
                headers={"authorization": f"Bearer {approver}"},
            )
            assert approved.status_code == 200, approved.text
            rollout = approved.json()
    assert rollout["state"] == "held"
    assert "need the audit log" in rollout["reason"]
    with plane.db.session() as session:
        assert session.get(RegionTarget, ("eu-west-1", "nexus")) is None
