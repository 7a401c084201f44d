"""A spend anomaly's action end to end: a month of stark's ordinary spend, then a day thirty
times its size; the detector's scan holds stark (its budget's onAnomaly), the state bundle
carries the hold to a real OPA + Envoy enforcer, which refuses stark's chats on models above
$5 per million tokens (and serves cheaper ones); an approver's release through the CLI
serves them again. The finding, the hold and the release are audit events."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from nexus_cli.budgets import budgets_app
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_control.budgets import holds
from nexus_control.budgets.watch import EVENT
from nexus_control.store import outbox
from tests.fixtures.environment import Environment, credentials_overlay, eventually

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("anomaly")
    environment = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir / 'control.db'}",
        plain=credentials_overlay(workdir / "credentials"),
    )
    environment.start()
    try:
        yield environment
    finally:
        environment.stop()


def chat(env: Environment, model: str) -> tuple[int, str]:
    answer = env.call("stark-agent", "stark", "POST", CHAT, headers={"x-nexus-model": model})
    return answer.status_code, answer.text


def test_a_spike_holds_costly_models_until_an_approver_releases_it(env: Environment) -> None:
    assert env.plane is not None
    assert chat(env, "gpt-4.1")[0] == 200
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for back in range(30, 0, -1):
        day = now - timedelta(days=back)
        usd = 100.0 * (0.5 if day.weekday() >= 5 else 1.0) * (1 + 0.1 * math.sin(back))
        env.usage("stark", round(usd, 2), model="gpt-4.1", occurred_at=day).raise_for_status()
    env.usage("stark", 3_000.0, model="gpt-4.1", occurred_at=now).raise_for_status()

    found = [a for a in env.plane.anomalies.scan() if a.tenant == "stark"]
    assert [a.kind for a in found] == ["spike"]
    eventually(lambda: chat(env, "gpt-4.1")[0] == 403)
    _, body = chat(env, "gpt-4.1")
    assert "nexus.budget.anomaly_hold" in body and "spike" in body, body
    assert chat(env, "gpt-4o-mini")[0] == 200, "a model under the threshold is still served"

    approver = ["--url", env.url, "--token", env.tokens["approver"]]
    operator = ["--url", env.url, "--token", env.tokens["operator"]]
    listed = CliRunner().invoke(budgets_app, ["holds", "--json", *operator])
    assert listed.exit_code == 0, listed.output
    assert '"stark"' in listed.output
    released = CliRunner().invoke(
        budgets_app, ["release", "stark", "--reason", "planned launch spend", *approver]
    )
    assert released.exit_code == 0, released.output
    assert "released" in released.output
    eventually(lambda: chat(env, "gpt-4.1")[0] == 200)

    with env.plane.db.session() as session:
        kinds = [
            e.event_type
            for e in outbox.events(session)
            if e.event_type in {EVENT, holds.HELD, holds.RELEASED}
            and e.payload.get("tenant") == "stark"
        ]
    assert kinds == [EVENT, holds.HELD, holds.RELEASED]
