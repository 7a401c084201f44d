"""End to end: a revision in shadow is judged on live traffic through real Envoy and our OPA,
while every client gets the active revision's answer; every outcome is a shadow leaf of the
audit log, counted into the shadow report and judged by the fleet's shadow gates."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from nexus_cli.shadow import shadow_app
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_control.rollout.fleet import fleet_yaml
from tests.fixtures.environment import Environment, credentials_overlay, eventually, write_overlay

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

SEARCH = "/v1/tools/web-search:invoke"
CALLS = 20
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'([a-z_]+)="([^"]*)"')


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("shadow")
    fleet = workdir / "fleet.yaml"
    fleet.write_text(
        fleet_yaml([("eu-west-1", "eu", 0, ["eu-west-1-1"])], soak_s=0)
        + "shadowGates:\n  denyToAllowMax: 0\n  denyToAllowMinRisk: low\n"
    )
    environment = Environment(
        fleet_file=fleet,
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir}/cp.db",
        plain=credentials_overlay(workdir / "credentials"),
        shadow_sample_percent=100,
    )
    try:
        environment.start()
        yield environment
    finally:
        environment.stop()


def opa_metrics(env: Environment) -> list[tuple[str, dict[str, str], float]]:
    """The enforcer's OPA /metrics, as (name, labels, value) samples."""
    assert env.stack is not None
    enforcer = env.stack.enforcers[0]
    text = httpx.get(f"{enforcer.opa_url}/metrics", headers=enforcer.opa_headers, timeout=10).text
    samples = []
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            labels = dict(_LABEL.findall(match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))
    return samples


def shadow_count(env: Environment, change: str, tool: str) -> float:
    return sum(
        value
        for name, labels, value in opa_metrics(env)
        if name == "nexus_shadow_decisions_total"
        and labels.get("change") == change
        and labels.get("tool") == tool
    )


def search(env: Environment) -> int:
    response = env.call("acme-chat", "acme", "POST", SEARCH, body={"arguments": {"query": "q"}})
    return response.status_code


def test_a_widening_revision_in_shadow_counts_deny_to_allow_while_clients_stay_denied(
    env: Environment,
) -> None:
    active = env.fleet()["enforcers"][0]["bundles"]["nexus"]["active_revision"]
    assert search(env) == 403, "acme-chat may not use web-search under the active revision"
    # The candidate: acme-chat gains the agent role, so web-search would be allowed. It is
    # approved (signed) and rolled out, then the original is published again over it, so the
    # candidate is signed but in force nowhere.
    widened = env.workdir / "credentials-widened"
    widened.mkdir()
    write_overlay(widened, env.plain, {"acme-chat": ("agent",)})
    candidate = env.publish(env.build(overlay=widened))
    assert candidate != active
    eventually(lambda: search(env) == 200)
    assert env.publish(env.build()) == active
    eventually(lambda: search(env) == 403)

    operator = ["--url", env.url, "--token", env.tokens["operator"]]
    shadow = cli(
        "set", env.region, candidate, "--reason", "what would widening do", "--json", *operator
    )
    assert shadow["revision"] == candidate and shadow["active_revision"] == active
    listed = cli("list", "--json", *operator)["shadows"]
    assert [(s["region"], s["revision"]) for s in listed] == [(env.region, candidate)]

    def holds_candidate() -> bool:
        return any(
            name == "nexus_shadow_bundle_info" and labels == {"revision": candidate} and value == 1
            for name, labels, value in opa_metrics(env)
        )

    eventually(holds_candidate, timeout_s=30)
    before = shadow_count(env, "deny_to_allow", "web-search")
    answers = [search(env) for _ in range(CALLS)]
    assert answers == [403] * CALLS, "clients get the active revision's answer, not the shadow's"
    eventually(lambda: shadow_count(env, "deny_to_allow", "web-search") - before == CALLS)
    assert env.fleet()["enforcers"][0]["bundles"]["nexus"]["active_revision"] == active
    dropped = [v for n, _, v in opa_metrics(env) if n == "nexus_shadow_dropped_total"]
    assert dropped == [0.0]

    # Every outcome reached the audit log as a shadow leaf, and the report counts them in the
    # replay report's buckets; the fleet's gate (no deny→allow on any tool) fails.
    def reported() -> dict[str, Any]:
        return cli("report", env.region, "--json", *reader)

    reader = ["--url", env.url, "--token", env.tokens["operator"]]
    eventually(lambda: reported()["deny_to_allow_by_tool"].get("web-search", 0) >= CALLS,
               timeout_s=30)  # fmt: skip
    report = reported()
    assert report["kind"] == "shadow_report"
    assert report["scope"]["candidate"] == candidate
    sample = report["samples"]["deny_to_allow"][0]
    assert sample["decision_id"] in env.decisions, "a shadow leaf names the decision it shadows"
    table = CliRunner().invoke(shadow_app, ["report", env.region, *reader])
    assert table.exit_code == 0, table.output
    assert "deny_to_allow[risk>=low]: FAIL" in table.output
    assert "the shadow gate fails" in table.output

    ended = CliRunner().invoke(shadow_app, ["end", env.region, "--reason", "seen", *operator])
    assert ended.exit_code == 0, ended.output
    eventually(lambda: not holds_candidate(), timeout_s=30)
    after = shadow_count(env, "deny_to_allow", "web-search")
    assert search(env) == 403
    assert shadow_count(env, "deny_to_allow", "web-search") == after, (
        "an ended shadow evaluates nothing"
    )


def cli(*args: str) -> Any:
    """`nexus-policy shadow ARGS` (with --json), its answer parsed."""
    result = CliRunner().invoke(shadow_app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)
