"""A rollout across three regions of real OPAs while the rollout engine's replica is killed.

Three `nexus-policy serve` replicas on one real PostgreSQL; a client that sends each
call to the next live replica (as a Service would); one real OPA per region, each
polling a replica that does not hold the rollout lease, as enforcers would poll
through the Service. When the second wave starts, the lease holder gets `kill -9`.
Another replica takes the lease over and carries the same rollout on: every region
gets the revision, each wave starts and converges exactly once, and the rollout
completes once.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.signing_keys import load_signing_key, public_pem
from nexus_control.api.app import create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.plane import ROLLOUT_LEASE
from nexus_control.rollout.fleet import fleet_yaml
from nexus_control.rollout.states import RolloutAction
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_dataplane.enforcer import EnforcerStack, StackOptions
from nexus_runtime.toolchain import find_envoy
from tests.fixtures.environment import credentials_overlay, gateway_sources
from tests.fixtures.replicas import Replicas, lease_holders, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.opa]

REGIONS = (("eu-west-1", "eu", 0), ("eu-central-1", "eu", 1), ("us-east-1", "us", 2))
SOAK_S = 2
"""Long enough between waves that the kill lands while the second wave is moving."""
ROLLOUT_TIMEOUT_S = 120.0
TAKEOVER_TIMEOUT_S = 60.0


class RoundRobin:
    """API calls, each to the next replica still alive."""

    def __init__(self, replicas: Replicas) -> None:
        self._replicas = replicas
        self._turn = itertools.count()

    def client(self, role: str) -> ControlPlaneClient:
        live = self._replicas.live()
        index = live[next(self._turn) % len(live)]
        return ControlPlaneClient(self._replicas.url(index), self._replicas.tokens[role])

    def get(self, path: str) -> dict[str, Any]:
        with self.client("operator") as api:
            result: dict[str, Any] = api.get(path)
            return result


def enrol(replicas: Replicas, database_url: str, fleet: Path) -> dict[str, str]:
    """Each region's enforcer registered with its own token, as `dataplane up` does."""
    settings = ControlSettings(
        database_url=database_url, keys_dir=replicas.keys_dir, fleet_file=fleet
    )
    plane = create_control_plane(settings)
    try:
        with plane.db.session() as session:
            return {
                f"{region}-1": enrol_enforcer(
                    session, plane.fleet.declared, f"{region}-1", region, "e2e operator"
                )
                for region, _, _ in REGIONS
            }
    finally:
        plane.close()
        plane.db.dispose()


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str, audit_pg_url: str) -> Iterator[Replicas]:
    fleet = tmp_path / "fleet.yaml"
    rows = [(region, jurisdiction, wave, [f"{region}-1"]) for region, jurisdiction, wave in REGIONS]
    fleet.write_text(fleet_yaml(rows, soak_s=SOAK_S, activation_deadline_s=60, stale_after_s=20))
    started = Replicas(tmp_path, pg_url, audit_pg_url, env={"NEXUS_FLEET_FILE": str(fleet)})
    try:
        started.start()
        yield started
    finally:
        started.stop()


def history(rollout: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(entry["action"], entry["region"]) for entry in rollout["history"]]


def test_a_rollout_completes_exactly_once_when_its_engine_is_killed_mid_wave(
    replicas: Replicas, pg_url: str, opa: Opa, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.yaml"
    tokens = enrol(replicas, pg_url, fleet)
    wait_for(lambda: len(lease_holders(pg_url, ROLLOUT_LEASE)) == 1, 30, "no rollout engine")
    (leader_pid,) = lease_holders(pg_url, ROLLOUT_LEASE)
    leader = replicas.index_of(leader_pid)
    followers = [i for i in replicas.live() if i != leader]

    signing = load_signing_key(replicas.keys_dir / "bundle-signing.pem")
    stacks: list[EnforcerStack] = []
    try:
        for n, (region, _, _) in enumerate(REGIONS):
            stack = EnforcerStack(
                StackOptions(
                    region=region,
                    control_plane_url=replicas.url(followers[n % len(followers)]),
                    token="",
                    credentials=tokens.__getitem__,
                    key_id=ControlSettings().signing_key_id,
                    verification_key_pem=public_pem(signing),
                    workdir=tmp_path / "dataplane",
                    opa_bin=opa.binary,
                    envoy_bin=find_envoy(),
                    with_envoy=False,
                    long_poll_timeout_s=5,
                ),
                count=1,
            )
            stacks.append(stack)
            stack.start(wait_for_bundles=False)

        api = RoundRobin(replicas)
        credentials_overlay(tmp_path / "credentials")
        sources = gateway_sources(tmp_path, tmp_path / "credentials")
        with api.client("author") as author:
            published = author.publish(sources.pack())
        rollout_id, revision = published["rollout"]["id"], published["revision"]
        if published["rollout"]["state"] == "pending_approval":
            with api.client("approver") as approver:
                approver.post(f"/v1/rollouts/{rollout_id}/approve", {"comment": "ok"})

        # --- kill -9 the engine's replica as the second wave starts -------------
        def second_wave_started() -> bool:
            steps = history(api.get(f"/v1/rollouts/{rollout_id}"))
            return (RolloutAction.WAVE_STARTED.value, REGIONS[1][0]) in steps

        wait_for(second_wave_started, ROLLOUT_TIMEOUT_S, "the second wave never started")
        at_kill = history(api.get(f"/v1/rollouts/{rollout_id}"))
        replicas.kill(leader)
        killed_at = time.monotonic()
        wait_for(
            lambda: (h := lease_holders(pg_url, ROLLOUT_LEASE)) and h[0] != leader_pid,
            TAKEOVER_TIMEOUT_S,
            "no replica took the rollout lease over after kill -9",
        )
        takeover_s = time.monotonic() - killed_at
        (successor_pid,) = lease_holders(pg_url, ROLLOUT_LEASE)
        assert replicas.index_of(successor_pid) in followers

        def finished() -> bool:
            return api.get(f"/v1/rollouts/{rollout_id}")["state"] not in ("rolling", "approved")

        try:
            wait_for(finished, ROLLOUT_TIMEOUT_S, "the rollout never finished")
        except AssertionError:
            state = {"rollout": api.get(f"/v1/rollouts/{rollout_id}"),
                     "status": api.get("/v1/rollouts/status")}  # fmt: skip
            detail = json.dumps(state, indent=1)
            raise AssertionError(f"rollout {rollout_id} stuck:\n{detail}") from None
        done = api.get(f"/v1/rollouts/{rollout_id}")
        assert done["state"] == "completed", done
        steps = history(done)
        actions = [action for action, _ in steps]
        started = [region for action, region in steps if action == RolloutAction.WAVE_STARTED]
        assert started == [region for region, _, _ in REGIONS], steps
        assert actions.count(RolloutAction.WAVE_CONVERGED) == len(REGIONS), steps
        assert actions.count(RolloutAction.COMPLETED) == 1, steps

        # Every enforcer runs the revision; no region was assigned anything else.
        for region in api.get("/v1/rollouts/status")["regions"]:
            assert region["desired"] == region["last_good"] == revision, region
            assert {e["state"] for e in region["enforcers"]} == {"active"}, region
        print(
            f"engine killed after {at_kill[-1][0]} of {at_kill[-1][1]}; "
            f"lease taken over in {takeover_s:.2f} s; rollout completed with "
            f"{len(steps)} history entries"
        )
    finally:
        for stack in stacks:
            stack.stop()
