"""The demo's shadow step: a revision shadowed in the next wave reaches it only once its shadow
gate passes, on that region's live traffic, and the shadow report shows why."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from nexus_cli.demo.stack import SHADOW_MIN_SAMPLE, SHADOW_REGION, DemoRun
from nexus_cli.replay import print_gates, print_report

__all__ = ["SHADOW_STEP_TIMEOUT_S", "shadow_step"]

SHADOW_STEP_TIMEOUT_S = 60.0
_POLL_S = 0.25


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(_POLL_S)
    return False


def shadow_step(
    run: DemoRun, published: dict[str, Any], traffic: Callable[[], object], out: Console
) -> bool:
    """Pause ``published``'s rollout in its canary wave, shadow its revision in
    `SHADOW_REGION` (the next wave), resume, and let ``traffic`` (one request through that
    region's Envoy) run until the shadow gate lets the rollout in; whether it did."""
    rollout_id, revision = published["rollout"]["id"], published["revision"]
    with run.api("operator") as operator:
        operator.post(f"/v1/rollouts/{rollout_id}/pause", {"reason": "shadow it first"})
        operator.post("/v1/shadow", {"region": SHADOW_REGION, "revision": revision,
                                     "reason": "judge it on the next wave's traffic"})  # fmt: skip
        operator.post(f"/v1/rollouts/{rollout_id}/resume", {})

        def rollout() -> dict[str, Any]:
            status: dict[str, Any] = operator.get(f"/v1/rollouts/{rollout_id}")
            return status

        held = _wait(lambda: "shadow gate failed" in (rollout().get("reason") or ""), 30)
        if held:
            out.print(f"  held in wave {rollout()['wave']}: {rollout()['reason']}")

        def sampled() -> bool:
            traffic()
            report = json.loads(operator.get(f"/v1/shadow/{SHADOW_REGION}/report")["report"])
            return int(report["total"]) >= SHADOW_MIN_SAMPLE

        enough = _wait(sampled, SHADOW_STEP_TIMEOUT_S)
        result = operator.get(f"/v1/shadow/{SHADOW_REGION}/report")
        out.print(f"  the shadow report of {revision[:12]} in {SHADOW_REGION}:")
        print_report(json.loads(result["report"]))
        print_gates(result["gates"])
        promoted = enough and _wait(lambda: rollout()["wave"] > 0, SHADOW_STEP_TIMEOUT_S)
        moved = f"its shadow gate passed: promoted into wave {rollout()['wave']}"
        out.print(f"  {moved if promoted else 'NOT promoted'}; every verdict is an audit event")
        operator.post(f"/v1/shadow/{SHADOW_REGION}/end", {"reason": "judged"})
    return held and promoted
