"""An insider forges the evidence a quality gate reads: every way is refused, nothing stored.

On the control plane over SQLite and over a real PostgreSQL, with the example bundle
published and its rollout waiting for approval: an author (or approver, operator,
compliance officer) posting an evaluation of their own change is 403; the evaluator's token
can neither publish, approve, override nor read; an evaluation of a prompt version or model
no published revision knows is 422; a malformed, oversized or future-dated body is refused
with the field at fault. None of them leaves a row or an audit event. An old passing result
posted again after a newer failing one does not reopen the gate. An author who loosens a
threshold so a failing version passes needs a second person (the diff shows it widening),
and that person's approval is refused while a newer result fails what the revision signs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.quality.evaluations import MAX_EVALUATION_BYTES
from nexus_control.store import outbox
from nexus_control.store.tables import Evaluation
from tests.conftest import GATEWAY
from tests.fixtures.quality import NOW, PASSING, evaluation, gated_bundle

pytestmark = pytest.mark.opa

SOURCES_TYPE = {"content-type": "application/vnd.nexus.sources+gzip"}
PEOPLE = (Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE)


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        for role in (*PEOPLE, Role.EVALUATOR):
            out[role.value], _ = create_token(session, name=f"mallory-{role.value}", role=role)
    return out


@pytest.fixture
def client(plane: ControlPlane, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        published = test_client.post(
            "/v1/bundles",
            content=pack_sources(GATEWAY),
            headers=_auth(tokens["author"], **SOURCES_TYPE),
        )
        assert published.status_code == 201, published.text
        yield test_client


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def _nothing_stored(plane: ControlPlane) -> None:
    with plane.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Evaluation)) == 0
        assert outbox.events(session, "evaluation.recorded") == []


def _post(client: TestClient, token: str, body: object) -> Any:
    return client.post("/v1/evaluations", json=body, headers=_auth(token))


def test_author_posting_evaluations_of_their_own_change_is_forbidden(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    body = evaluation(prompt="support-agent", version="4")
    for role in PEOPLE:
        response = _post(client, tokens[role.value], body)
        assert response.status_code == 403, (role, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    assert _post(client, "nxp_forged", body).status_code == 401
    _nothing_stored(plane)


def test_evaluator_token_cannot_publish_approve_override_or_read(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    evaluator = _auth(tokens["evaluator"])
    (rollout,) = plane.rollouts.recent(1, diff=False)
    assert rollout.state.value == "pending_approval"
    attempts = (
        client.post("/v1/bundles", content=pack_sources(GATEWAY),
                    headers={**evaluator, **SOURCES_TYPE}),
        client.post(f"/v1/rollouts/{rollout.id}/approve", json={"comment": "lgtm"},
                    headers=evaluator),
        client.post(f"/v1/rollouts/{rollout.id}/override", json={"reason": "trust me"},
                    headers=evaluator),
        client.post(f"/v1/rollouts/{rollout.id}/promote", json={}, headers=evaluator),
        client.get("/v1/evaluations", headers=evaluator),
        client.get("/v1/events", headers=evaluator),
    )  # fmt: skip
    for response in attempts:
        assert response.status_code == 403, response.text
    (after,) = plane.rollouts.recent(1, diff=False)
    assert (after.id, after.state) == (rollout.id, rollout.state)


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ({"prompt": "exfiltrate", "version": "1"}, "prompt 'exfiltrate' is not in the latest"),
        (
            {"prompt": "support-agent", "version": "99"},
            "prompt 'support-agent' has no version '99'",
        ),
        ({"model": "gpt-9-unreleased"}, "model 'gpt-9-unreleased' is not in the latest"),
    ],
)
def test_evaluation_of_an_unknown_prompt_version_or_model_is_refused(
    client: TestClient,
    tokens: dict[str, str],
    plane: ControlPlane,
    subject: dict[str, str],
    reason: str,
) -> None:
    response = _post(client, tokens["evaluator"], evaluation(**subject))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unknown_subject"
    assert reason in response.json()["error"]["message"]
    _nothing_stored(plane)


MALFORMED: list[tuple[str, object, str]] = [
    ("extra key", evaluation(model="gpt-4o", passed=True), "passed: Extra inputs"),
    ("two subjects", evaluation(model="gpt-4o", prompt="support-agent", version="3"),
     "exactly one of prompt"),
    ("no subject", evaluation(), "exactly one of prompt"),
    ("prompt without version", evaluation(prompt="support-agent"), "names its version"),
    ("model with version", evaluation(model="gpt-4o", version="3"), "has no version"),
    ("score above 1", evaluation(model="gpt-4o", safety_score=1.5), "safety_score: Input"),
    ("negative rate", evaluation(model="gpt-4o", hallucination_rate=-0.1),
     "hallucination_rate: Input"),
    ("score as text", evaluation(model="gpt-4o", safety_score="0.99"), "safety_score: Input"),
    ("score as bool", evaluation(model="gpt-4o", safety_score=True), "safety_score: Input"),
    ("empty dataset", evaluation(model="gpt-4o", dataset_size=0), "dataset_size: Input"),
    ("huge dataset", evaluation(model="gpt-4o", dataset_size=10**12), "dataset_size: Input"),
    ("long dataset id", evaluation(model="gpt-4o", dataset_id="d" * 129), "dataset_id: String"),
    ("control characters", evaluation(model="gpt-4o", dataset_id="golden\n[FORGED] ok"),
     "dataset_id: String"),
    ("prompt id injection", evaluation(prompt="support-agent'; --", version="3"),
     "prompt: String"),
    ("naive time", evaluation(model="gpt-4o", evaluated_at="2026-12-01T10:00:00"),
     "evaluated_at: Input should have timezone"),
    ("not an object", ["gpt-4o", 1.0], "Input should be"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_evaluation_is_refused_and_nothing_stored(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane, body: object, reason: str
) -> None:
    response = _post(client, tokens["evaluator"], body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_evaluation"
    assert reason in response.json()["error"]["message"], response.json()
    _nothing_stored(plane)


def test_oversized_not_json_or_future_evaluation_is_refused_and_nothing_stored(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    evaluator = _auth(tokens["evaluator"], **{"content-type": "application/json"})
    padded = json.dumps(evaluation(model="gpt-4o", dataset_id="d" * MAX_EVALUATION_BYTES))
    assert client.post("/v1/evaluations", content=padded, headers=evaluator).status_code == 413
    for garbage in (b"", b"NaN", b'{"model": "gpt-4o", "safety_score": NaN', b"\xff\xfe"):
        response = client.post("/v1/evaluations", content=garbage, headers=evaluator)
        assert response.status_code == 422, (garbage, response.text)
    future = evaluation(model="gpt-4o", evaluated_at=(NOW + timedelta(days=365)).isoformat())
    response = _post(client, tokens["evaluator"], future)
    assert response.status_code == 422
    assert "is in the future" in response.json()["error"]["message"]
    _nothing_stored(plane)


def test_replaying_an_old_passing_evaluation_does_not_reopen_the_gate(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane, tmp_path: Path
) -> None:
    old = (NOW - timedelta(days=2)).isoformat()
    for subject in PASSING:
        assert (
            _post(client, tokens["evaluator"], evaluation(**subject, evaluated_at=old)).status_code
            == 201
        )
    failing = evaluation(model="gpt-4.1", cost_per_call_usd=0.9)
    assert _post(client, tokens["evaluator"], failing).status_code == 201
    replayed = evaluation(model="gpt-4.1", evaluated_at=old)
    assert _post(client, tokens["evaluator"], replayed).status_code == 201

    root, _, _ = gated_bundle(tmp_path, "gated")
    response = client.post(
        "/v1/bundles", content=pack_sources(root), headers=_auth(tokens["author"], **SOURCES_TYPE)
    )
    assert response.status_code == 422, response.text
    assert "maxCostPerCallUsd 0.02: measured 0.9" in response.json()["error"]["message"]


def _publish(client: TestClient, tokens: dict[str, str], root: Path) -> Any:
    response = client.post(
        "/v1/bundles", content=pack_sources(root), headers=_auth(tokens["author"], **SOURCES_TYPE)
    )
    assert response.status_code == 201, response.text
    return response.json()["rollout"]


def _approve(client: TestClient, tokens: dict[str, str], rollout_id: int) -> Any:
    return client.post(
        f"/v1/rollouts/{rollout_id}/approve", json={}, headers=_auth(tokens["approver"])
    )


def _loosened(tmp_path: Path, client: TestClient, tokens: dict[str, str]) -> Any:
    """The gated bundle in force; version 3 measured 0.7 safe; the author lowers the bar
    from 0.9 to 0.6 so it passes, and publishes."""
    (first,) = client.get("/v1/rollouts", headers=_auth(tokens["operator"])).json()["rollouts"]
    assert _approve(client, tokens, first["id"]).status_code == 200
    for subject in PASSING:
        assert _post(client, tokens["evaluator"], evaluation(**subject)).status_code == 201
    root, prompts, _ = gated_bundle(tmp_path, "gated")
    gated = _publish(client, tokens, root)
    assert gated["needs_approval"] is False, "adding thresholds narrows: no second person"
    unsafe = evaluation(prompt="support-agent", version="3", safety_score=0.7,
                        evaluated_at=NOW.isoformat())  # fmt: skip
    assert _post(client, tokens["evaluator"], unsafe).status_code == 201
    (root / "prompts.yaml").write_text(
        prompts.replace("minSafetyScore: 0.9", "minSafetyScore: 0.6")
    )
    return _publish(client, tokens, root)


def test_loosening_a_quality_threshold_to_pass_a_failing_version_needs_a_second_person(
    client: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    loosened = _loosened(tmp_path, client, tokens)
    assert loosened["needs_approval"] is True
    assert loosened["state"] == "pending_approval"
    detail = client.get(f"/v1/rollouts/{loosened['id']}", headers=_auth(tokens["operator"]))
    (change,) = [c for c in detail.json()["diff"]["changes"] if c["area"] == "quality"]
    assert change == {
        "area": "quality",
        "subject": "prompt:support-agent",
        "detail": "minSafetyScore 0.9 → 0.6",
        "effect": "widens",
    }
    own = client.post(
        f"/v1/rollouts/{loosened['id']}/approve", json={}, headers=_auth(tokens["author"])
    )
    assert own.status_code == 403, "the author cannot approve their own loosening"


def test_approving_after_the_version_failed_a_newer_evaluation_is_refused(
    client: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    loosened = _loosened(tmp_path, client, tokens)
    later = (NOW + timedelta(minutes=1)).isoformat()
    worse = evaluation(prompt="support-agent", version="3", safety_score=0.4, evaluated_at=later)
    assert _post(client, tokens["evaluator"], worse).status_code == 201

    refused = _approve(client, tokens, loosened["id"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "quality_gate"
    assert "minSafetyScore 0.6: measured 0.4" in refused.json()["error"]["message"]
    after = client.get(f"/v1/rollouts/{loosened['id']}", headers=_auth(tokens["operator"]))
    assert after.json()["state"] == "pending_approval", "nothing was signed or started"
    assert "approved" not in [h["action"] for h in after.json()["history"]]

    better = evaluation(prompt="support-agent", version="3", safety_score=0.65,
                        evaluated_at=(NOW + timedelta(minutes=2)).isoformat())  # fmt: skip
    assert _post(client, tokens["evaluator"], better).status_code == 201
    assert _approve(client, tokens, loosened["id"]).status_code == 200
