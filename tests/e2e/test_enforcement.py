"""End to end: client → real Envoy → ext_authz → real OPA ← bundles from the control plane."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_control.access.approvals import issue_approval
from nexus_control.access.signing_keys import KeyPaths, load_approval_key
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.redis_spend import RedisSpendStore
from nexus_control.store.tables import BundleRevision, RegionTarget
from tests.fixtures.cases import CASES
from tests.fixtures.environment import Environment, credentials_overlay, eventually, write_overlay
from tests.fixtures.servers import PostgresServer, RedisServer

pytestmark = [pytest.mark.opa, pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

CHAT = "/v1/chat/completions"


def fresh_database(postgres: PostgresServer) -> str:
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def redis_for_spend() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    postgres: PostgresServer,
    redis_for_spend: RedisServer,
) -> Iterator[Environment]:
    """The production stack: PostgreSQL for the control plane, Redis for spend."""
    workdir = tmp_path_factory.mktemp("e2e")
    environment = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=fresh_database(postgres),
        plain=credentials_overlay(workdir / "credentials"),
        spend=RedisSpendStore(redis_for_spend.url),
    )
    try:
        environment.start()
        yield environment
    finally:
        environment.stop()


def reasons(response: Any) -> list[str]:
    return [r["rule"] for r in response.json()["reasons"]]


@pytest.mark.parametrize(
    ("credential", "tenant", "method", "path", "headers", "body", "status", "rule"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_concern_through_envoy(
    env: Environment,
    credential: str | None,
    tenant: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    status: int,
    rule: str | None,
) -> None:
    response = env.call(credential, tenant, method, path, headers=headers, body=body)
    assert response.status_code == status, response.text
    decision_id = response.headers.get("x-nexus-decision-id", "")
    assert uuid.UUID(decision_id), "every answer carries the decision id"
    if status == 200:
        forwarded = response.json()["headers"]
        assert forwarded["x-nexus-decision-id"] == decision_id
        assert "authorization" not in forwarded, "the credential never reaches the upstream"
    else:
        found = reasons(response)
        assert rule in found
        assert all(r["controls"] for r in response.json()["reasons"]), "every reason names controls"


def test_rollout_routes_the_model_and_the_prompt(env: Environment) -> None:
    response = env.call(
        "stark-agent",
        "stark",
        "POST",
        CHAT,
        headers={
            "x-nexus-model": "chat-default",
            "x-nexus-prompt": "support-agent",
            "x-nexus-subject": "s-1",
        },
    )
    assert response.status_code == 200
    forwarded = response.json()["headers"]
    assert forwarded["x-nexus-route-model"] == "gpt-4.1"  # stark's override
    assert forwarded["x-nexus-prompt-version"] in {"support-agent@3", "support-agent@4", "3", "4"}
    killed = env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "chat-fast"})
    assert (
        killed.json()["headers"]["x-nexus-route-model"] == "gpt-4o-mini"
    )  # kill switch → baseline


def test_approved_high_risk_tool_call_runs_and_the_token_binds_its_arguments(
    env: Environment, session_keys: KeyPaths
) -> None:
    arguments = {"language": "python", "source": "print('<&>')", "timeoutSeconds": 5}
    approval = issue_approval(
        load_approval_key(session_keys.approval),
        tenant="acme",
        tool="code-exec",
        arguments=arguments,
        approver="carol@acme.example",
        subject="apikey:acme-agent",
        max_ttl_s=900,
    )
    path = "/v1/tools/code-exec:invoke"
    ok = env.call(
        "acme-agent",
        "acme",
        "POST",
        path,
        body={"arguments": arguments},
        headers={"x-nexus-approval": approval.token},
    )
    assert ok.status_code == 200, ok.text
    assert "x-nexus-approval" not in ok.json()["headers"]
    other = env.call(
        "acme-agent",
        "acme",
        "POST",
        path,
        body={"arguments": {**arguments, "source": "rm -rf /"}},
        headers={"x-nexus-approval": approval.token},
    )
    assert other.status_code == 403
    assert "nexus.tools.approval_invalid" in reasons(other)


def test_publishing_a_new_revision_changes_decisions_without_restarts(env: Environment) -> None:
    before = env.call(
        "acme-chat",
        "acme",
        "POST",
        "/v1/tools/web-search:invoke",
        body={"arguments": {"query": "q"}},
    )
    assert before.status_code == 403
    overlay = env.workdir / "credentials-widened"
    overlay.mkdir()
    write_overlay(overlay, env.plain, {"acme-chat": ("agent",)})
    revision = env.publish(env.build(overlay=overlay))
    waited = eventually(
        lambda: (
            env.call(
                "acme-chat",
                "acme",
                "POST",
                "/v1/tools/web-search:invoke",
                body={"arguments": {"query": "q"}},
            ).status_code
            == 200
        )
    )
    enforcer = env.fleet()["enforcers"][0]
    assert enforcer["bundles"]["nexus"]["active_revision"] == revision
    assert waited < 10
    env.publish(env.build())  # back to the original grants
    eventually(
        lambda: (
            env.call(
                "acme-chat",
                "acme",
                "POST",
                "/v1/tools/web-search:invoke",
                body={"arguments": {"query": "q"}},
            ).status_code
            == 403
        )
    )


def test_spend_crossing_the_hard_cap_refuses_within_seconds(env: Environment) -> None:
    assert (
        env.call(
            "hooli-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}
        ).status_code
        == 200
    )
    assert env.usage("hooli", 7_000.0).status_code == 202
    soft = eventually(
        lambda: (
            "x-nexus-budget-warning"
            in env.call(
                "hooli-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}
            ).headers
        )
    )
    assert soft < 5
    assert env.usage("hooli", 1_500.0).json()["ratio"] >= 1
    waited = eventually(
        lambda: (
            env.call(
                "hooli-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}
            ).status_code
            == 429
        )
    )
    assert waited < 5
    refused = env.call("hooli-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
    assert "nexus.budget.tenant_cap_reached" in reasons(refused)


def test_two_chats_that_fit_alone_but_not_together_the_second_waits_for_the_first(
    env: Environment,
) -> None:
    # umbrella: $50 a month; $49.90 spent leaves $0.10. A chat of 100 000 output tokens on
    # gpt-4o-mini ($0.60/Mtok) costs just over $0.06 at worst: one fits, two do not.
    def chat(max_tokens: int) -> httpx.Response:
        body = {"max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-nexus-model": "gpt-4o-mini"}
        return env.call("umbrella-chat", "umbrella", "POST", CHAT, headers=headers, body=body)

    assert env.usage("umbrella", 49.9, model="gpt-4o-mini").status_code == 202
    eventually(lambda: chat(200_000).status_code == 429)  # $0.12 at worst: over $0.10
    # The large chats admitted before the state caught up are held by the enforcer until
    # a state read after they ended counts them (the trailing rebuild, ~3 s on): until
    # then a chat that fits what was published is refused beside their holds.
    waiting = chat(100_000)
    if waiting.status_code == 429:
        assert reasons(waiting) == ["nexus.cost.reservation_exceeds_remaining"]
    eventually(lambda: chat(100_000).status_code == 200)
    assert env.usage("umbrella", 0.06, model="gpt-4o-mini").status_code == 202
    # Refused beside the first's hold at once, then by the policy once the state counts it.
    eventually(lambda: reasons(chat(100_000)) == ["nexus.cost.worst_case_exceeds_remaining"])
    refused = chat(100_000)
    assert reasons(refused) == ["nexus.cost.worst_case_exceeds_remaining"]
    assert 'tenant "umbrella" has left ($0.040000)' in refused.json()["reasons"][0]["message"]
    # The first chat's $0.06 stays held until a state read after it ended is published.
    eventually(lambda: chat(1_000).status_code == 200)


def test_repeated_usage_report_counts_once(env: Environment) -> None:
    request_id = f"e2e-repeat-{uuid.uuid4()}"
    first = env.usage("initech", 100.0, request_id=request_id).json()
    second = env.usage("initech", 100.0, request_id=request_id).json()
    assert first["counted"] is True and second["counted"] is False
    assert second["ratio"] is None


def _tamper(archive: bytes) -> bytes:
    """Change one policy byte inside a signed archive, keeping its signature."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src.getmembers():
            handle = src.extractfile(member)
            content = handle.read() if handle else b""
            if member.name.endswith("data.json"):
                config = json.loads(content)  # the data of data.nexus.config
                config["grants"]["acme"]["apikey:acme-chat"]["tools:db-write"] = True
                content = json.dumps(config).encode()
            info = tarfile.TarInfo(member.name)
            info.size = len(content)
            dst.addfile(info, io.BytesIO(content))
    return out.getvalue()


def test_tampered_bundle_is_refused_and_the_previous_revision_kept(env: Environment) -> None:
    assert env.plane is not None
    good = env.fleet()["enforcers"][0]["bundles"]["nexus"]["active_revision"]
    bad_revision = "f" * 64
    with env.plane.db.session() as session:
        original = session.get(BundleRevision, good)
        assert original is not None
        session.add(
            BundleRevision(
                revision=bad_revision,
                bundle="gateway",
                archive=_tamper(original.archive),
                sha256="0" * 64,
                size=1,
                manifest=original.manifest,
                config=original.config,
                git_commit=None,
                author="attacker",
                published_at=datetime.now(UTC),
            )
        )
        session.flush()
        target = session.get(RegionTarget, (env.region, "nexus"))
        assert target is not None
        target.desired_revision = bad_revision
    env.plane.notifier.notify([f"{env.region}/nexus"])

    def errored() -> bool:
        bundle = env.fleet()["enforcers"][0]["bundles"]["nexus"]
        return bool(bundle["error"]) and bundle["active_revision"] == good

    eventually(errored)
    error = env.fleet()["enforcers"][0]["bundles"]["nexus"]["error"]
    assert (
        "verification" in error.lower() or "digest" in error.lower() or "signature" in error.lower()
    )
    response = env.call(
        "acme-chat",
        "acme",
        "POST",
        "/v1/tools/db-write:invoke",
        body={"arguments": {"database": "x", "statement": "y"}},
    )
    assert response.status_code == 403
    with env.plane.db.session() as session:
        target = session.get(RegionTarget, (env.region, "nexus"))
        assert target is not None
        target.desired_revision = good
    env.plane.notifier.notify([f"{env.region}/nexus"])
    eventually(lambda: not env.fleet()["enforcers"][0]["bundles"]["nexus"]["error"])


def test_enforcers_keep_deciding_while_the_control_plane_is_down(env: Environment) -> None:
    assert env.stack is not None
    env.stop_control_plane()
    try:
        ok = env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        assert ok.status_code == 200
        enforcer = env.stack.enforcers[0]
        env.stack.restart_opa(enforcer, wait_for_bundles=False)
        eventually(
            lambda: (
                env.call(
                    "acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}
                ).status_code
                == 200
            )
        )
        denied = env.call("acme-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        assert denied.status_code == 403, "the persisted bundle still refuses what it refused"
    finally:
        env.start_control_plane()


def test_envoy_fails_closed_when_opa_is_unreachable(env: Environment) -> None:
    assert env.stack is not None
    enforcer = env.stack.enforcers[0]
    enforcer.opa.kill()
    try:
        response = env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        assert response.status_code in (403, 503)
        assert "x-nexus-route-model" not in response.text
    finally:
        env.stack.restart_opa(enforcer, wait_for_bundles=True)


def test_decisions_of_a_healthy_enforcer_are_leaves_exactly_once(env: Environment) -> None:
    """Decisions of a healthy enforcer reach the audit log, each exactly once.

    (It counts the decisions it makes itself; that a killed OPA loses none is
    `tests/security/test_kill_enforcer_loses_no_decision.py`, and under load with the
    intake down, `make bench BENCH_ARGS="--only audit_chaos"`.)
    """
    from sqlalchemy import func, select

    from nexus_audit.tables import Leaf
    from nexus_audit.verify import verify_log

    assert env.audit is not None
    env.decisions.clear()
    for n in range(40):
        tenant, key = ("acme", "acme-chat") if n % 2 else ("hooli", "acme-chat")
        env.call(key, tenant, "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
    made = set(env.decisions)
    assert len(made) == 40

    def recorded() -> int:
        assert env.audit is not None
        with env.audit.db.session() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Leaf).where(Leaf.decision_id.in_(made))
                )
                or 0
            )

    eventually(lambda: recorded() == len(made), timeout_s=30)
    report = verify_log(env.audit.db, env.audit.verifier)
    assert report.size >= len(made)


def test_an_approver_issues_a_tool_approval_through_the_api(env: Environment) -> None:
    arguments = {"paymentId": "pay_77", "amountCents": 500, "currency": "EUR"}
    with ControlPlaneClient(env.url, env.tokens["approver"]) as api:
        issued = api.post(
            "/v1/approvals/tools",
            {
                "tenant": "acme",
                "tool": "payment-refund",
                "arguments": arguments,
                "subject": "apikey:acme-agent",
                "ttl_seconds": 60,
                "reason": "customer complaint",
            },
        )
        with pytest.raises(ApiCallError) as needless:
            api.post(
                "/v1/approvals/tools",
                {
                    "tenant": "acme",
                    "tool": "web-search",
                    "arguments": {"query": "x"},
                    "subject": "apikey:acme-agent",
                },
            )
        assert needless.value.status == 422
    ok = env.call(
        "acme-agent",
        "acme",
        "POST",
        "/v1/tools/payment-refund:invoke",
        body={"arguments": arguments},
        headers={"x-nexus-approval": issued["token"]},
    )
    assert ok.status_code == 200, ok.text
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        events = api.get("/v1/events", event_type="tool_approval.issued")["events"]
    assert events[-1]["payload"]["args_sha256"] == issued["args_sha256"]
    assert "token" not in events[-1]["payload"], "the token itself is never recorded"


def test_metrics_show_convergence(env: Environment) -> None:
    response = httpx.get(
        f"{env.url}/metrics",
        headers={"authorization": f"Bearer {env.tokens['operator']}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert 'nexus_region_convergence_ratio{region="eu-west-1"} 1.0' in response.text
    assert 'nexus_enforcers{region="eu-west-1",state="active"} 1.0' in response.text


def test_a_long_chat_context_reaches_the_upstream_unbuffered(env: Environment) -> None:
    """Chat bodies are not forwarded to the policy, so no ext_authz body limit applies."""
    long_context = {"messages": [{"role": "user", "content": "x" * (512 * 1024)}]}
    response = env.call(
        "acme-chat",
        "acme",
        "POST",
        "/v1/chat/completions",
        headers={"x-nexus-model": "gpt-4o"},
        body=long_context,
    )
    assert response.status_code == 200, response.text


def test_a_tool_call_body_over_its_route_limit_is_refused_by_envoy(env: Environment) -> None:
    """Tool arguments are read by the policy: their route forwards the body, up to its limit."""
    huge = {"arguments": {"query": "x" * (128 * 1024)}}
    response = env.call("acme-agent", "acme", "POST", "/v1/tools/web-search:invoke", body=huge)
    assert response.status_code == 413


def test_a_tool_call_with_duplicate_json_keys_is_refused_before_the_policy(
    env: Environment,
) -> None:
    """The policy and an upstream that keeps the first key must never see different arguments."""
    body = b'{"arguments": {"query": "weather", "query": "rm -rf /"}}'
    response = httpx.post(
        env.gateway() + "/v1/tools/web-search:invoke",
        content=body,
        headers={
            "authorization": f"Bearer {env.plain['acme-agent']}",
            "x-nexus-tenant": "acme",
            "content-type": "application/json",
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert reasons(response) == ["nexus.request.body_duplicate_key"]
