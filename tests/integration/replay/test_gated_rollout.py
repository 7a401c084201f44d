"""A failing replay gate holds a rollout; a fix or an approver's override releases it.

One real stack (control plane and audit log on SQLite, Envoy + OPA enforcer)
whose fleet declares a deny→allow gate on high-risk tools. The gate replays
the signed candidate over the decisions the enforcer really made, with the
real OPA, before any wave starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_control.rollout import engine
from nexus_control.rollout.rollouts import GATE_SILENCE_S
from nexus_control.store import outbox
from tests.fixtures.environment import Environment, eventually
from tests.fixtures.gated import (
    FILE_DELETE,
    gated_environment,
    lowered_risk,
    publish_gated,
    record_file_delete_refusal,
)


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    with gated_environment(tmp_path_factory.mktemp("gated"), opa, session_keys) as environment:
        record_file_delete_refusal(environment)
        yield environment


def _events(env: Environment, kind: str, rollout_id: int) -> list[dict[str, Any]]:
    assert env.plane is not None
    with env.plane.db.session() as session:
        found = outbox.events(session, kind)
    return [e.payload for e in found
            if e.payload.get("rollout_id", e.payload.get("rollout")) == rollout_id]  # fmt: skip


def _desired(env: Environment) -> str:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        regions = api.get("/v1/rollouts/status")["regions"]
    return str(regions[0]["desired"])


def test_the_authors_fix_supersedes_a_held_rollout_and_passes_its_gate(env: Environment) -> None:
    running = _desired(env)
    held = publish_gated(env, lowered_risk(env))
    assert held["state"] == "held", held
    fixed = publish_gated(env, env.build())
    assert fixed["state"] == "rolling", fixed
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        assert api.get(f"/v1/rollouts/{held['id']}")["state"] == "superseded"
    (verdict,) = _events(env, "replay.gate_verdict", fixed["id"])
    assert verdict["passed"] is True and verdict["digest"].startswith("sha256:")
    assert _desired(env) == running


def test_a_gate_whose_process_died_is_run_again_once_and_its_verdict_holds(
    env: Environment,
) -> None:
    """The process judging a held rollout dies before its verdict: another run judges it."""
    assert env.plane is not None and env.audit is not None
    held = publish_gated(env, lowered_risk(env))
    assert held["state"] == "held", held
    rollout_id = held["id"]
    gate = env.plane.replay_gate(env.audit)
    assert gate is not None
    # What a crash mid-gate leaves: the hold committed, no verdict since.
    with env.plane.db.session() as session:
        row = engine.get(session, rollout_id)
        row.reason = engine.GATE_PENDING
        row.updated_at = datetime.now(UTC) - timedelta(seconds=GATE_SILENCE_S + 60)
    assert env.plane.rollouts.recover_gates(gate, silent_for_s=GATE_SILENCE_S * 2) == []

    env.plane.rollouts.recover_gates(gate)  # the serving loop may claim it first: either runs it
    eventually(lambda: len(_events(env, "replay.gate_verdict", rollout_id)) == 2, timeout_s=60)
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        judged = api.get(f"/v1/rollouts/{rollout_id}")
    restarts = [h for h in judged["history"] if "restarted" in (h["detail"] or "")]
    assert len(restarts) == 1 and restarts[0]["actor"] == engine.ENGINE
    assert judged["state"] == "held" and "deny_to_allow[risk>=high]" in judged["reason"]
    assert env.plane.rollouts.recover_gates(gate) == []
    assert len(_events(env, "replay.gate_verdict", rollout_id)) == 2
    assert publish_gated(env, env.build())["state"] == "rolling"  # the fix supersedes it


def test_a_deny_to_allow_on_a_high_risk_tool_is_held_until_an_approver_overrides_it(
    env: Environment,
) -> None:
    running = _desired(env)
    rollout = publish_gated(env, lowered_risk(env))
    rollout_id = rollout["id"]
    assert rollout["state"] == "held", rollout
    assert "deny_to_allow[risk>=high]: observed 1" in rollout["reason"]
    (verdict,) = _events(env, "replay.gate_verdict", rollout_id)
    assert verdict["passed"] is False
    assert [g["gate"] for g in verdict["gates"] if not g["passed"]] == ["deny_to_allow[risk>=high]"]
    (reported,) = _events(env, "replay.reported", rollout_id)
    assert reported["digest"] == verdict["digest"] and reported["counts"]["deny_to_allow"] >= 1

    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        with pytest.raises(ApiCallError) as promoted:
            api.post(f"/v1/rollouts/{rollout_id}/promote", {"force": True})
        assert promoted.value.status == 409 and "held by its replay gate" in promoted.value.message
    assert env.plane is not None
    env.plane.rollouts.tick()
    assert _desired(env) == running
    denied = env.call("acme-agent", "acme", "POST", FILE_DELETE,
                      body={"arguments": {"path": "/tmp/x"}})  # fmt: skip
    assert denied.status_code == 403

    reason = "file-delete is sandboxed per tenant now (SEC-123)"
    cli = subprocess.run(
        [sys.executable, "-m", "nexus_cli", "override", str(rollout_id), "--reason", reason,
         "--url", env.url, "--token", env.tokens["approver"], "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    released = json.loads(cli.stdout)
    assert released["state"] == "rolling" and released["reason"] is None
    (overridden,) = _events(env, "replay.gate_overridden", rollout_id)
    assert overridden["reason"] == reason
    assert overridden["approver_principal"] and "replay gate failed" in overridden["held_for"]
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        actions = [h["action"] for h in api.get(f"/v1/rollouts/{rollout_id}")["history"]]
    assert actions[:5] == ["created", "approved", "held", "held", "overridden"]
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        assert _desired(env) == api.get(f"/v1/rollouts/{rollout_id}")["revision"]

    def allowed() -> bool:
        response = env.call("acme-agent", "acme", "POST", FILE_DELETE,
                            body={"arguments": {"path": "/tmp/x"}})  # fmt: skip
        return response.status_code == 200

    eventually(allowed, timeout_s=30)
