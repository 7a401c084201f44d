"""An insider who wants a change the replay gate holds to ship anyway.

The gate holds a change that would allow a high-risk tool call the running
policy refused. Only an approver who is not the change's author may release
it, and only with a reason on the record: the author under an approver
token of their own, a role that may not approve, an override without a
reason, and the same override sent twice are all refused, and the rollout
(and the audit trail) stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token, token_digest
from nexus_control.authoring.opa import Opa
from nexus_control.rollout import engine
from nexus_control.rollout.states import RolloutState
from nexus_control.store import outbox
from nexus_control.store.tables import ApiToken
from tests.fixtures.environment import Environment
from tests.fixtures.gated import (
    gated_environment,
    lowered_risk,
    publish_gated,
    record_file_delete_refusal,
)


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("gate-override")
    with gated_environment(workdir, opa, session_keys) as environment:
        record_file_delete_refusal(environment)
        yield environment


@pytest.fixture(scope="module")
def held(env: Environment) -> int:
    rollout = publish_gated(env, lowered_risk(env))
    assert rollout["state"] == "held", rollout
    return int(rollout["id"])


def _override(env: Environment, rollout_id: int, token: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{env.url}/v1/rollouts/{rollout_id}/override",
        headers={"authorization": f"Bearer {token}"},
        json=body,
        timeout=30,
    )


def _state(env: Environment, rollout_id: int) -> str:
    assert env.plane is not None
    rollout, _ = env.plane.rollouts.get(rollout_id)
    return str(rollout.state)


def _overrides(env: Environment) -> int:
    assert env.plane is not None
    with env.plane.db.session() as session:
        return len(outbox.events(session, "replay.gate_overridden"))


def test_author_cannot_override_own_failing_gate(env: Environment, held: int) -> None:
    assert env.plane is not None
    with env.plane.db.session() as session:
        author = session.scalar(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(env.tokens["author"]))
        )
        assert author is not None
        # Another spelling of the author's name is the same principal, with an approver token.
        own_approver, principal = create_token(
            session, name=author.name.upper(), role=Role.APPROVER
        )
    assert principal.principal_id == author.principal_id
    response = _override(env, held, own_approver, {"reason": "I am sure it is fine"})
    assert response.status_code == 403, response.text
    assert "cannot override its failing gate" in response.json()["error"]["message"]
    assert _state(env, held) == "held"
    assert _overrides(env) == 0


def test_override_without_reason_is_refused(env: Environment, held: int) -> None:
    for body in ({}, {"reason": ""}, {"reason": "   \n"}, {"reason": None}):
        response = _override(env, held, env.tokens["approver"], body)
        assert response.status_code == 422, (body, response.text)
    assert _state(env, held) == "held"
    assert _overrides(env) == 0


def test_override_by_a_role_that_may_not_approve_is_refused(env: Environment, held: int) -> None:
    for role in ("author", "operator", "gateway"):
        response = _override(env, held, env.tokens[role], {"reason": "ship it"})
        assert response.status_code == 403, (role, response.text)
    assert _override(env, held, "not-a-token", {"reason": "ship it"}).status_code == 401
    assert _state(env, held) == "held"
    assert _overrides(env) == 0


def test_an_override_replayed_twice_releases_once(env: Environment, held: int) -> None:
    body = {"reason": "accepted: file-delete is sandboxed (SEC-123)"}
    first = _override(env, held, env.tokens["approver"], body)
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "rolling"
    again = _override(env, held, env.tokens["approver"], body)
    assert again.status_code == 409, again.text
    assert "only a held one is overridden" in again.json()["error"]["message"]
    assert _overrides(env) == 1


def test_an_override_before_the_gate_has_a_verdict_is_refused(env: Environment) -> None:
    """An approver cannot race the replay: a gate still running is no failing gate to accept."""
    assert env.plane is not None
    plane = env.plane
    revision = plane.rollouts.base_revision()
    assert revision is not None
    with plane.db.session() as session:
        running, _ = engine.start(
            session, plane.fleet, revision, author="e2e-author", author_id="someone",
            diff={}, needs_approval=False, gated=True,
        )  # fmt: skip
    assert running.state is RolloutState.HELD and running.reason == engine.GATE_PENDING
    before = _overrides(env)
    response = _override(env, running.id, env.tokens["approver"], {"reason": "cannot wait"})
    assert response.status_code == 409, response.text
    assert "still running" in response.json()["error"]["message"]
    assert _overrides(env) == before
    # A verdict arriving for a rollout a newer publication superseded changes nothing.
    with plane.db.session() as session:
        engine.start(session, plane.fleet, revision, author="e2e-author", author_id="someone",
                     diff={}, needs_approval=False)  # fmt: skip
    with plane.db.session() as session:
        late, changed = engine.gate_judged(
            session, plane.fleet, running.id, passed=True, detail="late", actor="test"
        )
        assert late.state is RolloutState.SUPERSEDED and changed == []
