"""An insider who wants a change its shadow gate holds to reach the next wave anyway.

The next wave's shadow saw the change allow a high-risk tool call the running policy
refused. The author cannot release it under an approver token of their own, nobody can
promote past it (forced or not), and the rollout stays in its wave; only another approver,
with a reason on the record, releases it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token, token_digest
from nexus_control.authoring.opa import Opa
from nexus_control.store.tables import ApiToken
from tests.fixtures.shadow_gate import Flow, auth, eventually, shadow_gated, variant

pytestmark = pytest.mark.opa


@pytest.fixture
def held(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[tuple[Flow, int]]:
    with shadow_gated(tmp_path, session_keys, opa) as flow:
        candidate, rollout_id = flow.publish(variant(tmp_path, "widened", "high"))
        flow.candidate = candidate
        flow.shadow(candidate)
        flow.traffic(
            ("d-1", "unchanged", False, None),
            ("d-2", "unchanged", True, None),
            ("d-3", "deny_to_allow", False, "file-delete"),
        )
        flow.report_active("eu-west-1", candidate)
        eventually(lambda: "deny_to_allow" in (flow.rollout(rollout_id)["reason"] or ""))
        yield flow, rollout_id


def test_author_cannot_override_their_own_failing_shadow_gate(held: tuple[Flow, int]) -> None:
    flow, rollout_id = held
    with flow.plane.db.session() as session:
        author = session.scalar(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(flow.tokens["author"]))
        )
        assert author is not None
        own_approver, principal = create_token(
            session, name=author.name.upper(), role=Role.APPROVER
        )
    assert principal.principal_id == author.principal_id
    response = flow.client.post(
        f"/v1/rollouts/{rollout_id}/override",
        json={"reason": "I am sure it is fine"},
        headers=auth(own_approver),
    )
    assert response.status_code == 403, response.text
    assert "cannot override its failing gate" in response.json()["error"]["message"]
    assert flow.rollout(rollout_id)["wave"] == 0
    assert flow.events("shadow.gate_overridden") == []


def test_promoting_past_a_failing_shadow_gate_via_the_api_is_refused(
    held: tuple[Flow, int],
) -> None:
    flow, rollout_id = held
    for body in ({}, {"force": True}):
        response = flow.client.post(
            f"/v1/rollouts/{rollout_id}/promote", json=body, headers=auth(flow.tokens["operator"])
        )
        assert response.status_code == 409, (body, response.text)
        assert response.json()["error"]["code"] == "shadow_gate_held"
        assert "deny_to_allow[risk>=high]" in response.json()["error"]["message"]
    status = flow.rollout(rollout_id)
    assert status["wave"] == 0 and status["state"] == "rolling"
    assert flow.plane.rollouts.tick() == [], "the engine does not promote it either"
    assert flow.rollout(rollout_id)["wave"] == 0
