"""Key rotation: enforcers trust every key of the rotation window, and never a retired one.

Proven with the real OPA against bundles the control plane signed (SQLite
and PostgreSQL key rings): during the window a bundle signed by the old key
and one signed by the new key both activate; once the old key is retired it
is no longer in what enforcers are told to trust, and OPA refuses what it
signed. Every step is an audit event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.keyring import KeyPurpose, KeyringError
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.state import StateDocument, build_state_bundle
from nexus_control.plane import ControlPlane
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from tests.security.opa_verdict import opa_verdict

pytestmark = [pytest.mark.opa]

DOCUMENT: StateDocument = {
    "period": "2026-12",
    "spend": {},
    "disabled": {},
    "approvals": {"used": {}},
}


@pytest.fixture(params=["sqlite", "postgres"])
def plane(request: pytest.FixtureRequest, tmp_path: Path, opa: Opa) -> Iterator[ControlPlane]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'cp.db'}"
    settings = ControlSettings(database_url=url, keys_dir=tmp_path / "keys", regions=["eu-west-1"])
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()
    control.db.dispose()


def trusted(plane: ControlPlane) -> dict[str, tuple[str, str]]:
    """What an enforcer's config is rendered to trust now (`nexus-policy dataplane render`)."""
    return {
        k.kid: (k.algorithm.value, k.public_pem) for k in plane.keyring.trusted(KeyPurpose.BUNDLE)
    }


def signed_now(plane: ControlPlane) -> tuple[str, bytes]:
    key, kid = plane.keyring.signer(KeyPurpose.BUNDLE)
    return kid, build_state_bundle(DOCUMENT, key=key, key_id=kid).archive


def test_retired_signing_key_is_refused_by_opa(
    plane: ControlPlane, opa_bin: Path, tmp_path: Path
) -> None:
    old_kid, by_old = signed_now(plane)
    new = plane.keyring.rotate(KeyPurpose.BUNDLE, "olivia")
    assert new.kid in trusted(plane), "a new key is trusted before it signs anything"
    plane.activate_key(new.kid, "olivia", window_s=3600)
    new_kid, by_new = signed_now(plane)
    assert (old_kid, new_kid) == ("nexus-bundle-signing", new.kid)

    window = trusted(plane)
    assert set(window) == {old_kid, new_kid}
    for name, archive in (("old", by_old), ("new", by_new)):
        verdict = opa_verdict(opa_bin, tmp_path / f"window-{name}", window, archive)
        assert verdict.activated, f"{name} key during the window:\n{verdict.log}"

    plane.keyring.retire(old_kid, "olivia")
    after = trusted(plane)
    assert set(after) == {new_kid}
    refused = opa_verdict(opa_bin, tmp_path / "after-old", after, by_old)
    assert not refused.activated
    assert f"verification key corresponding to ID {old_kid} not found" in refused.log
    assert opa_verdict(opa_bin, tmp_path / "after-new", after, by_new).activated

    with pytest.raises(KeyringError, match="retired"):
        plane.keyring.activate(old_kid, "olivia")
    with plane.db.session() as session:
        kinds = [(e.event_type, e.payload.get("kid")) for e in outbox.events(session)]
    for event in (
        ("key.created", new_kid),
        ("key.activated", new_kid),
        ("key.retiring", old_kid),
        ("key.retired", old_kid),
    ):
        assert event in kinds, event


def test_a_key_past_its_window_retires_itself(plane: ControlPlane) -> None:
    old_kid = plane.keyring.signer(KeyPurpose.BUNDLE)[1]
    new = plane.keyring.rotate(KeyPurpose.BUNDLE, "olivia")
    plane.activate_key(new.kid, "olivia", window_s=0)
    assert set(trusted(plane)) == {new.kid}, "a window of 0 s ends at once"
    states = {k.kid: k.state for k in plane.keyring.keys()}  # noqa: SIM118 - a method
    assert states[old_kid] == "retired"


def test_rotation_is_an_operators_act_over_the_api(plane: ControlPlane) -> None:
    with plane.db.session() as session:
        operator, _ = create_token(session, name="olivia", role=Role.OPERATOR)
        author, _ = create_token(session, name="alice", role=Role.AUTHOR)
    with TestClient(create_app(plane)) as client:
        as_author = {"authorization": f"Bearer {author}"}
        as_operator = {"authorization": f"Bearer {operator}"}
        refused = client.post("/v1/keys/bundle-signing/rotate", json={}, headers=as_author)
        assert refused.status_code == 403
        made = client.post("/v1/keys/bundle-signing/rotate", json={}, headers=as_operator)
        assert made.status_code == 201, made.text
        assert made.json()["state"] == "next"
        twice = client.post("/v1/keys/bundle-signing/rotate", json={}, headers=as_operator)
        assert twice.status_code == 409, "one waiting key at a time"
        eddsa = client.post(
            "/v1/keys/approval-signing/rotate", json={"algorithm": "RS256"}, headers=as_operator
        )
        assert eddsa.status_code == 409
        kid = made.json()["kid"]
        active = client.post(
            f"/v1/keys/{kid}/activate", json={"window_seconds": 60}, headers=as_operator
        )
        assert active.status_code == 200 and active.json()["state"] == "active"
        listed = client.get("/v1/keys", headers=as_author).json()
        assert "PRIVATE" not in str(listed)
        states = {k["kid"]: k["state"] for k in listed["keys"]}
        assert states["nexus-bundle-signing"] == "retiring"
        assert states[kid] == "active"
