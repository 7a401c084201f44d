"""Facts the policy decides on cannot be claimed by a client or a gateway token.

Against the running stack (SQLite and PostgreSQL, real Envoy + OPA): a
record's age and data class come only from the record store's signed token
(the headers that used to carry them are stripped by Envoy and ignored by the
policy); a gateway token reports usage only for its tenants, never in the
future nor for unknown models or features; per-feature caps follow the key's
bound feature, not a header; a kill switch stops pinned prompt versions; and a
real OPA without its state bundle refuses metered routes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.authoring.opa import Opa
from nexus_control.store.tables import DisabledTenant
from nexus_dataplane.records import DEV_RECORD_ISSUER, RecordFacts, RecordSigner
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.files import FileKey
from tests.conftest import GATEWAY
from tests.fixtures.environment import Environment, eventually
from tests.fixtures.gateway_opa import start_gateway_opa

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"


def reasons(response: httpx.Response) -> list[str]:
    return [r["rule"] for r in response.json()["reasons"]]


def record_token(
    signer: RecordSigner, tenant: str, record_id: str, data_class: str, days: int
) -> dict[str, str]:
    facts = RecordFacts(record_id, tenant, data_class, datetime.now(UTC) - timedelta(days=days))
    return {"x-nexus-record-token": signer.token(facts)}


def own_signer() -> RecordSigner:
    """A key the attacker made, claiming to be the dev chat store (same issuer and kid)."""
    key = FileKey("attacker.pem", Algorithm.ES256, ec.generate_private_key(ec.SECP256R1()))
    return RecordSigner(key, "chat-store-dev", DEV_RECORD_ISSUER)


def usage(env: Environment, token: str, **fields: Any) -> httpx.Response:
    body = {
        "request_id": f"sec-{uuid.uuid4()}",
        "tenant": "acme",
        "model": "gpt-4o",
        "tokens": 10,
        "cost_usd": 1.0,
        **fields,
    }
    return httpx.post(
        f"{env.url}/v1/usage",
        headers={"authorization": f"Bearer {token}"},
        json=body,
        timeout=10,
    )


def gateway_token(env: Environment, *tenants: str) -> str:
    assert env.plane is not None
    with env.plane.db.session() as session:
        token, _ = create_token(
            session, name=f"gw-{uuid.uuid4().hex[:6]}", role=Role.GATEWAY, tenants=tenants
        )
    return token


def test_client_cannot_claim_a_fresh_record_by_header(stack: Environment) -> None:
    # acme keeps chat history 30 days; the store says this chat is 100 days old
    old = record_token(stack.records, "acme", "c-100", "chat-history", 100)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lying = {"x-nexus-record-created": now, "x-nexus-data-class": "tool-outputs"}
    refused = stack.call("acme-chat", "acme", "GET", "/v1/chats/c-100", headers=old | lying)
    assert refused.status_code == 410, refused.text
    assert reasons(refused) == ["nexus.retention.retention_expired"]

    # the headers alone, without the store's token, state nothing
    bare = stack.call("acme-chat", "acme", "GET", "/v1/chats/c-100", headers=lying)
    assert bare.status_code == 400
    assert reasons(bare) == ["nexus.retention.record_token_invalid"]

    # a token the client signs itself, a token for another record, for another tenant
    forged = record_token(own_signer(), "acme", "c-100", "chat-history", 1)
    other_record = record_token(stack.records, "acme", "c-fresh", "chat-history", 1)
    other_tenant = record_token(stack.records, "hooli", "c-100", "chat-history", 1)
    for headers in (forged, other_record, other_tenant):
        response = stack.call("acme-chat", "acme", "GET", "/v1/chats/c-100", headers=headers)
        assert response.status_code == 400, response.text
        assert reasons(response) == ["nexus.retention.record_token_invalid"]

    # a fresh record is served, and Envoy kept the claimed facts from the upstream too
    fresh = record_token(stack.records, "acme", "c-100", "chat-history", 3)
    served = stack.call("acme-chat", "acme", "GET", "/v1/chats/c-100", headers=fresh | lying)
    assert served.status_code == 200, served.text
    forwarded = served.json()["headers"]
    assert "x-nexus-record-created" not in forwarded
    assert "x-nexus-data-class" not in forwarded


def test_client_cannot_claim_another_data_class(stack: Environment) -> None:
    # stark holds uploaded-files; the file's store says so, the client says chat-history
    held = record_token(stack.records, "stark", "f-9", "uploaded-files", 2)
    claim = {"x-nexus-data-class": "chat-history"}
    refused = stack.call("stark-agent", "stark", "DELETE", "/v1/chats/f-9", headers=held | claim)
    assert refused.status_code == 403, refused.text
    assert reasons(refused) == ["nexus.retention.legal_hold"]

    # nor can the client sign the class it wants
    forged = record_token(own_signer(), "stark", "f-9", "chat-history", 2)
    response = stack.call("stark-agent", "stark", "DELETE", "/v1/chats/f-9", headers=forged)
    assert response.status_code == 400
    assert reasons(response) == ["nexus.retention.record_token_invalid"]

    # the store's word on a chat-history record lets it go
    chat = record_token(stack.records, "stark", "c-9", "chat-history", 2)
    allowed = stack.call("stark-agent", "stark", "DELETE", "/v1/chats/c-9", headers=chat)
    assert allowed.status_code == 200, allowed.text


def test_gateway_token_cannot_report_for_another_tenant(stack: Environment) -> None:
    acme_only = gateway_token(stack, "acme")
    refused = usage(stack, acme_only, tenant="globex", cost_usd=1_000_000)
    assert refused.status_code == 403
    assert "globex" in refused.json()["error"]["message"]
    assert usage(stack, acme_only, tenant="acme").status_code == 202
    assert stack.plane is not None
    with stack.plane.db.session() as session:
        disabled = session.scalars(
            select(DisabledTenant).where(DisabledTenant.tenant == "globex")
        ).all()
    assert disabled == []


def test_future_usage_cannot_predisable_a_tenant(stack: Environment) -> None:
    token = gateway_token(stack, "globex")
    future = datetime(2027, 3, 15, tzinfo=UTC).isoformat()
    refused = usage(stack, token, tenant="globex", cost_usd=1_000_000, occurred_at=future)
    assert refused.status_code == 422
    assert "in the future" in refused.json()["error"]["message"]
    assert stack.plane is not None
    with stack.plane.db.session() as session:
        assert session.get(DisabledTenant, ("globex", "2027-03")) is None
    # a few seconds of clock skew is no attack
    skewed = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    assert usage(stack, token, tenant="globex", occurred_at=skewed).status_code == 202


def test_unknown_model_usage_is_refused(stack: Environment) -> None:
    token = gateway_token(stack, "acme")
    model = usage(stack, token, model="gpt-9-ultra")
    assert model.status_code == 422
    assert "unknown model" in model.json()["error"]["message"]
    feature = usage(stack, token, feature="not-a-feature")
    assert feature.status_code == 422
    assert "unknown feature" in feature.json()["error"]["message"]
    assert usage(stack, token, feature="support-chat").status_code == 202


def test_feature_header_cannot_dodge_a_feature_cap(stack: Environment) -> None:
    # acme's support-chat feature is capped at $20,000; the acme-support key is bound to it
    token = gateway_token(stack, "acme")
    assert usage(stack, token, feature="support-chat", cost_usd=20_001).status_code == 202

    def refused() -> bool:
        response = stack.call(
            "acme-support",
            "acme",
            "POST",
            CHAT,
            headers={"x-nexus-model": "gpt-4o", "x-nexus-feature": "another-feature"},
        )
        return response.status_code == 429 and reasons(response) == [
            "nexus.budget.feature_cap_reached"
        ]

    eventually(refused)
    # a key bound to no feature is not held to that cap
    other = stack.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
    assert other.status_code == 200, other.text


def test_pinned_version_cannot_bypass_kill_switch(stack: Environment) -> None:
    text = (GATEWAY / "rollouts.yaml").read_text()
    flag = "  - id: support-agent-v4\n    target: prompt\n"
    assert flag in text
    sources = stack.build()
    (sources.bundle_dir / "rollouts.yaml").write_text(
        text.replace(flag, flag + "    killSwitch: true\n")
    )
    stack.publish(sources)

    def version(pin: str) -> str | None:
        response = stack.call(
            "stark-agent",
            "stark",
            "POST",
            CHAT,
            headers={"x-nexus-model": "gpt-4o", "x-nexus-prompt": pin},
        )
        if response.status_code != 200:
            return None
        forwarded: dict[str, str] = response.json()["headers"]
        return forwarded.get("x-nexus-prompt-version")

    eventually(lambda: version("support-agent@4") == "3")
    assert version("support-agent") == "3"
    # a client cannot hand the upstream a version itself either
    response = stack.call(
        "stark-agent",
        "stark",
        "POST",
        "/v1/tools/web-search:invoke",
        headers={"x-nexus-prompt-version": "4"},
        body={"arguments": {"query": "opa"}},
    )
    assert response.status_code == 200, response.text
    assert "x-nexus-prompt-version" not in response.json()["headers"]


@pytest.fixture(scope="module")
def stateless_opa(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[tuple[OpaClient, dict[str, str]]]:
    """A real OPA holding the policy bundle, whose state bundle never arrived."""
    workdir = tmp_path_factory.mktemp("stateless")
    server, plain = start_gateway_opa(workdir, opa, session_keys, signing_public_pem)
    client = OpaClient(ClientOptions(server.url))
    try:
        yield client, plain
    finally:
        client.close()
        server.stop()


def test_budget_fails_closed_before_state_loads(
    stateless_opa: tuple[OpaClient, dict[str, str]],
) -> None:
    client, plain = stateless_opa

    def decide(key: str, tenant: str, method: str, path: str, **headers: str) -> Any:
        sent = {"x-nexus-tenant": tenant, "authorization": f"Bearer {plain[key]}", **headers}
        body = {"arguments": {"query": "opa"}} if "tools" in path else None
        return client.decide(GatewayRequest(method, path, sent, body))

    chat = decide("acme-chat", "acme", "POST", CHAT, **{"x-nexus-model": "gpt-4o"})
    assert chat.http_status == 503
    assert [r.rule for r in chat.reasons] == ["nexus.budget.state_unknown"]
    tool = decide("acme-agent", "acme", "POST", "/v1/tools/web-search:invoke")
    assert tool.http_status == 503
    # unmetered routes spend nothing and are still decided on their merits
    erase = decide("acme-dpo", "acme", "DELETE", "/v1/subjects/s-1")
    assert erase.allowed, erase.reasons
