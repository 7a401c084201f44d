"""Provider health end to end: a probe reports gpt-4o degraded in eu-west-1, and every
enforcer of the region (real OPA + Envoy, fed by the control plane's state bundle) routes
acme's chats to gpt-4o's first fallback in acme's plan, naming why; a report for another
region changes nothing here; healthy again, traffic goes back to gpt-4o."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.authoring.opa import Opa
from tests.fixtures.environment import Environment, credentials_overlay, eventually

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
ENFORCERS = 2


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("fallback")
    environment = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir / 'control.db'}",
        plain=credentials_overlay(workdir / "credentials"),
        enforcers=ENFORCERS,
    )
    environment.start()
    assert environment.plane is not None
    with environment.plane.db.session() as session:
        environment.tokens["probe"], _ = create_token(
            session, name="eu-probe", role=Role.PROBE, region="eu-west-1"
        )
        environment.tokens["central-probe"], _ = create_token(
            session, name="central-probe", role=Role.PROBE
        )
    try:
        yield environment
    finally:
        environment.stop()


def report(env: Environment, token: str, **fields: Any) -> httpx.Response:
    body = {
        "model": "gpt-4o",
        "region": "eu-west-1",
        "status": "degraded",
        "reason": "5xx rate 12% over 1 min",
        "observed_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    return httpx.post(
        f"{env.url}/v1/health/models",
        json=body,
        headers={"authorization": f"Bearer {env.tokens[token]}"},
        timeout=10,
    )


def routed(env: Environment, enforcer: int) -> tuple[str, str | None]:
    response = env.call(
        "acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}, enforcer=enforcer
    )
    assert response.status_code == 200, response.text
    return response.json()["headers"]["x-nexus-route-model"], response.headers.get(
        "x-nexus-fallback"
    )


def every_enforcer_routes(env: Environment, model: str) -> bool:
    return all(routed(env, n)[0] == model for n in range(ENFORCERS))


def test_a_degraded_model_sends_every_enforcer_of_the_region_to_its_fallback(
    env: Environment,
) -> None:
    assert every_enforcer_routes(env, "gpt-4o")

    # Another region's trouble is not this region's.
    assert report(env, "central-probe", region="us-east-1", status="down").status_code == 202
    time.sleep(0.5)
    assert every_enforcer_routes(env, "gpt-4o")

    assert report(env, "probe").status_code == 202
    # acme is on enterprise: claude-sonnet-4 is gpt-4o's first fallback and in its plan.
    eventually(lambda: every_enforcer_routes(env, "claude-sonnet-4"), timeout_s=5)
    for n in range(ENFORCERS):
        assert routed(env, n) == ("claude-sonnet-4", "gpt-4o->claude-sonnet-4")

    assert report(env, "probe", status="healthy", reason="recovered").status_code == 202
    eventually(lambda: every_enforcer_routes(env, "gpt-4o"), timeout_s=5)
    assert routed(env, 0)[1] is None


def test_a_probe_bound_to_a_region_cannot_report_for_another(env: Environment) -> None:
    answer = report(env, "probe", region="us-east-1", status="down")
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "region_not_bound"
