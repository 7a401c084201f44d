"""Quality gates at publish, through the API, on SQLite and on a real PostgreSQL.

The example bundle is published once as it is (so its prompts and models are
known), then with ``quality`` thresholds on the support-agent prompt and the
chat-default model flag: refused while a routed version has no evaluation, or
a failing latest one, each at its file:line and naming the thresholds missed,
with nothing stored and nothing recorded; published once an evaluator posted
passing results; refused again once a later result fails.
"""

from __future__ import annotations

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
from nexus_control.store import outbox
from nexus_control.store.tables import BundleRevision, OutboxEvent
from tests.conftest import GATEWAY
from tests.fixtures.quality import NOW, PASSING, evaluation, gated_bundle, line_of

pytestmark = pytest.mark.opa

SOURCES_TYPE = {"content-type": "application/vnd.nexus.sources+gzip"}


@pytest.fixture
def tokens(plane: ControlPlane) -> dict[str, str]:
    out: dict[str, str] = {}
    with plane.db.session() as session:
        for name, role in (
            ("alice", Role.AUTHOR),
            ("carol", Role.COMPLIANCE),
            ("eval-pipeline", Role.EVALUATOR),
        ):
            out[role.value], _ = create_token(session, name=name, role=role)
    return out


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane)) as test_client:
        yield test_client


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **extra}


def publish(client: TestClient, tokens: dict[str, str], sources: bytes) -> Any:
    return client.post(
        "/v1/bundles", content=sources, headers=_auth(tokens["author"], **SOURCES_TYPE)
    )


def post(client: TestClient, tokens: dict[str, str], **fields: object) -> Any:
    return client.post(
        "/v1/evaluations", json=evaluation(**fields), headers=_auth(tokens["evaluator"])
    )


def stored(plane: ControlPlane) -> tuple[int, int]:
    with plane.db.session() as session:
        revisions = session.scalar(select(func.count()).select_from(BundleRevision))
        events = session.scalar(select(func.count()).select_from(OutboxEvent))
    return int(revisions or 0), int(events or 0)


def test_a_rollout_is_published_only_once_every_routed_version_passes(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane, tmp_path: Path
) -> None:
    assert publish(client, tokens, pack_sources(GATEWAY)).status_code == 201
    root, _, rollouts = gated_bundle(tmp_path, "gated")
    sources = pack_sources(root)
    before = stored(plane)

    # No evaluation at all: each routed version is a problem at its route.
    refused = publish(client, tokens, sources)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "quality_gate"
    message = refused.json()["error"]["message"]
    gpt41 = line_of(rollouts, "- name: gpt-4.1", "key: chat-default")
    version4 = line_of(rollouts, '- name: "4"', "key: support-agent")
    assert (
        f"bundle/rollouts.yaml:{gpt41}:15: flag 'chat-default-2026-11' variant 'gpt-4.1' "
        "(50 % of its canary): routes traffic to model 'gpt-4.1', which has no evaluation"
    ) in message
    assert (
        f"bundle/rollouts.yaml:{version4}:15: flag 'support-agent-v4' variant '4' "
        "(30 % of its canary): routes traffic to prompt 'support-agent' version '4', which has "
        "no evaluation"
    ) in message
    assert message.count("which has no evaluation") == 4
    assert stored(plane) == before, "a refused publication stores and records nothing"

    # A failing evaluation: refused, naming the thresholds it misses and only those.
    for subject in PASSING:
        assert post(client, tokens, **subject).status_code == 201
    assert post(client, tokens, model="gpt-4.1", p95_latency_ms=1500, cost_per_call_usd=0.5,
                dataset_size=50).status_code == 201  # fmt: skip
    refused = publish(client, tokens, sources)
    assert refused.status_code == 422
    (problem,) = refused.json()["error"]["message"].splitlines()
    assert problem.startswith(f"bundle/rollouts.yaml:{gpt41}:15: ")
    assert problem.endswith(
        "fails maxP95LatencyMs 900: measured 1500; maxCostPerCallUsd 0.02: measured 0.5; "
        "minDatasetSize 200: measured 50"
    )
    assert stored(plane) == (before[0], before[1] + 5), "only the 5 evaluations were recorded"

    # A newer passing result supersedes it: published.
    assert post(client, tokens, model="gpt-4.1", evaluated_at=NOW.isoformat()).status_code == 201
    published = publish(client, tokens, sources)
    assert published.status_code == 201, published.text

    # A later failing result refuses the next publication that routes to it.
    later = (NOW + timedelta(minutes=1)).isoformat()
    assert post(client, tokens, prompt="support-agent", version="3", safety_score=0.5,
                evaluated_at=later).status_code == 201  # fmt: skip
    wider, _, wider_rollouts = gated_bundle(tmp_path, "wider", canary=30)
    refused = publish(client, tokens, pack_sources(wider))
    assert refused.status_code == 422
    version3 = line_of(wider_rollouts, '- name: "3"', "key: support-agent")
    (problem,) = refused.json()["error"]["message"].splitlines()
    assert problem.startswith(f"bundle/rollouts.yaml:{version3}:15: flag 'support-agent-v4'")
    assert problem.endswith("fails minSafetyScore 0.9: measured 0.5")

    listed = client.get(
        "/v1/evaluations", params={"prompt": "support-agent"}, headers=_auth(tokens["compliance"])
    )
    assert listed.status_code == 200
    newest = listed.json()["evaluations"][0]
    assert (newest["version"], newest["safety_score"], newest["evaluator"]) == (
        "3",
        0.5,
        "eval-pipeline",
    )
    assert {e["subject"] for e in listed.json()["evaluations"]} == {"support-agent"}
    with plane.db.session() as session:
        recorded = outbox.events(session, "evaluation.recorded")
    assert len(recorded) == 7
    assert recorded[-1].actor == "eval-pipeline"
    assert recorded[-1].payload["subject"] == "support-agent"
    assert recorded[-1].payload["safety_score"] == 0.5


def test_a_bundle_without_quality_publishes_as_before(
    client: TestClient, tokens: dict[str, str], plane: ControlPlane
) -> None:
    response = publish(client, tokens, pack_sources(GATEWAY))
    assert response.status_code == 201, response.text
    with plane.db.session() as session:
        assert outbox.events(session, "evaluation.recorded") == []
