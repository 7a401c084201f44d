"""Rollouts across three regions of real OPA enforcers (Envoy is not needed here)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_cli.demo.faults import rotate_before_trust, undo_rotation
from nexus_control.access.signing_keys import KeyPaths, load_signing_key, public_pem
from nexus_control.access.tokens import Role, create_token
from nexus_control.authoring.opa import Opa
from nexus_control.rollout.fleet import fleet_yaml
from nexus_dataplane.enforcer import EnforcerStack, StackOptions
from nexus_runtime.toolchain import find_envoy
from tests.fixtures.environment import (
    KEY_ID,
    Environment,
    Sources,
    credentials_overlay,
    eventually,
    scope,
    write_overlay,
)

pytestmark = [pytest.mark.opa]

REGIONS = (("eu-west-1", "eu", 0), ("eu-central-1", "eu", 1), ("us-east-1", "us", 2))
PER_REGION = 2
SOAK_S = 1
ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy/helm/nexus-policy/files/alerts.yml"


def fleet_file(path: Path) -> Path:
    rows = [
        (region, jurisdiction, wave, [f"{region}-{n}" for n in range(1, PER_REGION + 1)])
        for region, jurisdiction, wave in REGIONS
    ]
    path.write_text(fleet_yaml(rows, soak_s=SOAK_S, activation_deadline_s=30, stale_after_s=8))
    return path


class FleetEnvironment(Environment):
    """Three regions in three waves, two OPA enforcers each."""

    stacks: dict[str, EnforcerStack]

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        base = super().settings
        return base.model_copy(update={"fleet_file": self.workdir / "fleet.yaml"})

    def start(self) -> None:
        from nexus_control.api.app import create_control_plane

        fleet_file(self.workdir / "fleet.yaml")
        self.plane = create_control_plane(self.settings, opa=self.opa)
        with self.plane.db.session() as session:
            for role in (Role.AUTHOR, Role.OPERATOR, Role.GATEWAY):
                self.tokens[role.value], _ = create_token(
                    session,
                    name="alice" if role is Role.AUTHOR else role.value,
                    role=role,
                    tenants=scope(role),
                )
            self.tokens["approver"], _ = create_token(session, name="bob", role=Role.APPROVER)
            self.tokens["author-approver"], _ = create_token(
                session, name="alice", role=Role.APPROVER
            )
        self.start_control_plane()
        self.stacks = {}
        for region, _, _ in REGIONS:
            stack = EnforcerStack(
                StackOptions(
                    region=region,
                    control_plane_url=self.url,
                    token="",
                    credentials=functools.partial(self.enrol, region=region),
                    key_id=KEY_ID,
                    verification_key_pem=public_pem(load_signing_key(self.keys.signing)),
                    workdir=self.workdir / "dataplane",
                    opa_bin=self.opa.binary,
                    envoy_bin=find_envoy(),
                    with_envoy=False,
                    long_poll_timeout_s=5,
                ),
                count=PER_REGION,
            )
            stack.start(wait_for_bundles=False)
            self.stacks[region] = stack

    def stop(self) -> None:
        for stack in getattr(self, "stacks", {}).values():
            stack.stop()
        super().stop()

    def api(self, token: str = "operator") -> ControlPlaneClient:
        return ControlPlaneClient(self.url, self.tokens[token])

    def status(self) -> dict[str, Any]:
        with self.api() as api:
            result: dict[str, Any] = api.get("/v1/rollouts/status")
            return result

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        with self.api() as api:
            result: dict[str, Any] = api.get(f"/v1/rollouts/{rollout_id}")
            return result

    def publish_rollout(self, built: Sources, *, approve: bool = True) -> dict[str, Any]:
        with self.api("author") as api:
            result: dict[str, Any] = api.publish(built.pack())
        if approve and result["rollout"]["state"] == "pending_approval":
            with self.api("approver") as api:
                api.post(f"/v1/rollouts/{result['rollout']['id']}/approve", {"comment": "ok"})
        return result

    def wait_state(self, rollout_id: int, *states: str, timeout_s: float = 45) -> dict[str, Any]:
        try:
            eventually(lambda: self.rollout(rollout_id)["state"] in states, timeout_s, 0.2)
        except AssertionError:
            detail = json.dumps(
                {"rollout": self.rollout(rollout_id), "status": self.status()}, indent=1
            )
            raise AssertionError(
                f"rollout {rollout_id} never reached {states}:\n{detail}"
            ) from None
        return self.rollout(rollout_id)

    def desired(self) -> dict[str, str | None]:
        return {r["region"]: r["desired"] for r in self.status()["regions"]}


@pytest.fixture(scope="module")
def fleet_env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[FleetEnvironment]:
    workdir = tmp_path_factory.mktemp("rollout")
    env = FleetEnvironment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir / 'cp.db'}",
        plain=credentials_overlay(workdir / "credentials"),
    )
    try:
        env.start()
        first = env.publish_rollout(env.build())
        env.wait_state(first["rollout"]["id"], "completed")
        yield env
    finally:
        env.stop()


_NARROWINGS = iter(range(1, 100))


def narrowing(env: FleetEnvironment, tag: str) -> Sources:
    """A routine change: chat history is kept a little shorter each time (narrows access).

    Every call gives a new revision (revisions are content addresses: a comment
    would not change one).
    """
    from tests.fixtures.environment import GATEWAY

    days = 365 - next(_NARROWINGS)
    text = (GATEWAY / "retention.yaml").read_text()
    text = text.replace(
        "  - dataClass: chat-history\n    days: 365",
        f"  - dataClass: chat-history\n    days: {days}",
    )
    assert f"days: {days}" in text, tag
    return env.build(**{"retention.yaml": text})


def events(env: FleetEnvironment, rollout_id: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = env.rollout(rollout_id)["history"]
    return history


def test_a_good_revision_rolls_wave_by_wave(fleet_env: FleetEnvironment) -> None:
    published = fleet_env.publish_rollout(narrowing(fleet_env, "good"))
    assert published["rollout"]["needs_approval"] is False, (
        "a narrowing change needs no second person"
    )
    done = fleet_env.wait_state(published["rollout"]["id"], "completed")
    history = done["history"]
    started = {e["region"]: i for i, e in enumerate(history) if e["action"] == "wave_started"}
    converged = [i for i, e in enumerate(history) if e["action"] == "wave_converged"]
    assert list(started) == ["eu-west-1", "eu-central-1", "us-east-1"]
    assert len(converged) == 3
    assert converged[0] < started["eu-central-1"] < converged[1] < started["us-east-1"]
    times = [datetime.fromisoformat(e["at"]) for e in history]
    soak = times[started["eu-central-1"]] - times[converged[0]]
    assert soak.total_seconds() >= SOAK_S
    for region in fleet_env.status()["regions"]:
        assert region["desired"] == region["last_good"] == published["revision"]
        assert {e["state"] for e in region["enforcers"]} == {"active"}


def test_a_revision_opa_refuses_halts_in_the_canary_and_rolls_back_there(
    fleet_env: FleetEnvironment,
) -> None:
    """A key activated before the canary trusts it: OPA refuses what it signs."""
    before = fleet_env.desired()
    with fleet_env.api() as operator:
        rotation = rotate_before_trust(operator)
    try:
        published = fleet_env.publish_rollout(narrowing(fleet_env, "untrusted key"))
        rollout_id = published["rollout"]["id"]
        bad = published["revision"]
        halted = fleet_env.wait_state(rollout_id, "halted")
    finally:
        with fleet_env.api() as operator:
            undo_rotation(operator, rotation)
    assert "activation failed" in (halted["reason"] or "")
    assert rotation.premature in (halted["reason"] or ""), "OPA named the key it does not know"
    assert fleet_env.desired() == before, "the canary is back on its last good revision"
    touched = {e["region"] for e in halted["history"] if e["action"] == "wave_started"}
    assert touched == {"eu-west-1"}, "no other region ever received the bad revision"
    for region in fleet_env.status()["regions"]:
        for enforcer in region["enforcers"]:
            assert enforcer["active_revision"] == before[region["region"]]

    def canary_clean() -> bool:
        canary = fleet_env.status()["regions"][0]
        return all(e["state"] == "active" and not e["error"] for e in canary["enforcers"])

    assert eventually(canary_clean, 10) < 10, "the activation error clears soon after the rollback"
    for stack_region in ("eu-central-1", "us-east-1"):
        for enforcer in fleet_env.stacks[stack_region].enforcers:
            held = httpx.get(
                f"{enforcer.opa_url}/v1/data/system/bundles",
                headers=enforcer.opa_headers,
                timeout=5,
            ).json()
            assert bad not in json.dumps(held)


def test_a_killed_enforcer_blocks_promotion_until_it_returns(fleet_env: FleetEnvironment) -> None:
    stack = fleet_env.stacks["eu-west-1"]
    victim = stack.enforcers[1]
    victim.opa.kill()
    published = fleet_env.publish_rollout(narrowing(fleet_env, "blocked"))
    rollout_id = published["rollout"]["id"]
    eventually(lambda: fleet_env.desired()["eu-west-1"] == published["revision"])
    import time

    time.sleep(SOAK_S + 3)
    current = fleet_env.rollout(rollout_id)
    assert current["state"] == "rolling", json.dumps(current, indent=1)
    assert current["wave"] == 0
    assert fleet_env.desired()["eu-central-1"] != published["revision"]
    stack.restart_opa(victim, wait_for_bundles=False)
    fleet_env.wait_state(rollout_id, "completed")


def test_a_removed_enforcer_no_longer_blocks(fleet_env: FleetEnvironment) -> None:
    stack = fleet_env.stacks["eu-central-1"]
    victim = stack.enforcers[1]
    victim.opa.kill()
    published = fleet_env.publish_rollout(narrowing(fleet_env, "removed"))
    rollout_id = published["rollout"]["id"]
    eventually(lambda: fleet_env.desired()["eu-central-1"] == published["revision"], 30)
    import time

    time.sleep(SOAK_S + 2)
    assert fleet_env.rollout(rollout_id)["wave"] == 1
    with fleet_env.api() as api:
        api.delete(f"/v1/fleet/{victim.id}")
    fleet_env.wait_state(rollout_id, "completed")
    # The removal stands when the enforcer comes back, until an operator registers it again.
    stack.restart_opa(victim, wait_for_bundles=False)
    assert victim.id not in {e["id"] for e in fleet_env.fleet()["enforcers"]}
    with fleet_env.api() as api:
        api.post("/v1/fleet", {"id": victim.id, "region": "eu-central-1"})
    eventually(lambda: victim.id in {e["id"] for e in fleet_env.fleet()["enforcers"]}, 30)


def test_a_widening_change_waits_for_a_second_approver(fleet_env: FleetEnvironment) -> None:
    overlay = fleet_env.workdir / "widen"
    overlay.mkdir()
    write_overlay(overlay, fleet_env.plain, {"acme-chat": ("dpo",)})
    before = fleet_env.desired()
    published = fleet_env.publish_rollout(fleet_env.build(overlay=overlay), approve=False)
    rollout_id = published["rollout"]["id"]
    assert published["rollout"]["state"] == "pending_approval"
    assert any(c["effect"] == "widens" for c in published["diff"]["changes"])
    import time

    time.sleep(1.0)
    assert fleet_env.desired() == before, "nothing moves before the approval"
    with fleet_env.api("author-approver") as api, pytest.raises(ApiCallError) as refused:
        api.post(f"/v1/rollouts/{rollout_id}/approve", {})
    assert refused.value.status == 403
    assert "author" in refused.value.message
    assert fleet_env.rollout(rollout_id)["state"] == "pending_approval"
    with fleet_env.api("approver") as api:
        api.post(f"/v1/rollouts/{rollout_id}/approve", {"comment": "reviewed"})
    done = fleet_env.wait_state(rollout_id, "completed")
    approved = [e for e in done["history"] if e["action"] == "approved"]
    assert approved[0]["actor"] == "bob"


def targets(env: FleetEnvironment) -> dict[str, Any]:
    status = env.status()
    return {
        "rollout": status["rollout"],
        "regions": [(r["region"], r["desired"], r["last_good"]) for r in status["regions"]],
    }


def test_bad_requests_change_nothing(fleet_env: FleetEnvironment) -> None:
    before = targets(fleet_env)
    with fleet_env.api() as api:
        for path, status in (
            ("/v1/rollouts/999999/promote", 404),
            ("/v1/rollouts/999999/rollback", 404),
            ("/v1/rollouts/1/rollback", 409),  # revision 1 runs nowhere any more
            ("/v1/rollouts/1/resume", 409),
        ):
            with pytest.raises(ApiCallError) as info:
                api.post(path, {})
            assert info.value.status == status, path
    assert targets(fleet_env) == before


def test_operator_rolls_back_and_pauses(fleet_env: FleetEnvironment) -> None:
    previous = fleet_env.desired()["eu-west-1"]
    published = fleet_env.publish_rollout(narrowing(fleet_env, "manual"))
    rollout_id = published["rollout"]["id"]
    eventually(lambda: fleet_env.desired()["eu-west-1"] == published["revision"])
    with fleet_env.api() as api:
        paused = api.post(f"/v1/rollouts/{rollout_id}/pause", {"reason": "looking at dashboards"})
        assert paused["state"] == "paused"
        back = api.post(f"/v1/rollouts/{rollout_id}/rollback", {"reason": "not today"})
        assert back["state"] == "rolled_back"
    assert fleet_env.desired()["eu-west-1"] == previous
    actions = [e["action"] for e in events(fleet_env, rollout_id)]
    assert actions.index("paused") < actions.index("rolled_back")


def test_an_enforcer_down_mid_rollout_pauses_it_through_prometheus_and_alertmanager(
    fleet_env: FleetEnvironment, tmp_path: Path
) -> None:
    """The alert's real expression, scraped and evaluated by a real Prometheus, sent by a
    real Alertmanager to the control plane's webhook, pauses the rollout in its name.

    The rule is the shipped NexusEnforcerDown with its ``for`` set to 0 s (promtool tests
    the ``for``); everything else is as shipped."""
    import time

    import yaml

    from tests.fixtures.prometheus import Alertmanager, Prometheus, ScrapeTarget

    shipped = yaml.safe_load(ALERT_RULES.read_text())
    (rule,) = [
        r for g in shipped["groups"] for r in g["rules"] if r["alert"] == "NexusEnforcerDown"
    ]
    assert rule["labels"]["remediation"] == "pause_rollout"
    rule["for"] = "0s"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "under-test", "rules": [rule]}]}))

    alertmanager = Alertmanager(
        tmp_path / "alertmanager",
        f"{fleet_env.url}/v1/alerts/webhook",
        fleet_env.tokens["operator"],
    )
    target = ScrapeTarget("control-plane", fleet_env.url.removeprefix("http://"),
                          fleet_env.tokens["operator"])  # fmt: skip
    prometheus = Prometheus(
        tmp_path / "prometheus", [target], (rules,), alertmanagers=(alertmanager.address,)
    )
    stack = fleet_env.stacks["us-east-1"]
    victim = stack.enforcers[0]
    try:
        alertmanager.start_and_wait()
        prometheus.start_and_wait()
        victim.opa.kill()
        published = fleet_env.publish_rollout(narrowing(fleet_env, "enforcer down"))
        rollout_id = published["rollout"]["id"]
        paused = fleet_env.wait_state(rollout_id, "paused", timeout_s=90)
        pause = next(e for e in paused["history"] if e["action"] == "paused")
        assert pause["actor"] == "operator", pause
        assert "NexusEnforcerDown" in (pause["detail"] or ""), pause
        # It stays paused: the enforcer returning does not let it go on by itself.
    finally:
        prometheus.stop()
        alertmanager.stop()
        stack.restart_opa(victim, wait_for_bundles=False)
    time.sleep(SOAK_S + 2)
    assert fleet_env.rollout(rollout_id)["state"] == "paused"
    with fleet_env.api() as api:
        api.post(f"/v1/rollouts/{rollout_id}/resume", {})
    fleet_env.wait_state(rollout_id, "completed", timeout_s=90)
