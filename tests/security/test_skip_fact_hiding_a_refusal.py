"""A request shaped so that one concern's skip fact holds must still get every refusal.

The gateway decision skips a concern's deny rules when one fact proves none can
refuse (tenants.served, rbac.granted, models.entitled, rollout.prompt_servable;
rego/nexus/envoy/authz.rego). An attacker who could satisfy a fact while its
concern, or another one, still refuses would get through. Against a real OPA
holding the signed example bundle: a suspended tenant's key that holds the
permission, a key that holds nothing the route needs in an active, entitled
tenant, an alias the tenant may name but whose routed model is outside its
plan, a retired prompt pinned on an entitled model, and two refusals at once:
each is refused with the rule that refuses it, and no reason goes missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from tests.fixtures.gateway_opa import put_empty_state, start_gateway_opa

pytestmark = pytest.mark.opa

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def enforcer(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[tuple[OpaClient, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("skip-facts")
    server, plain = start_gateway_opa(workdir, opa, session_keys, signing_public_pem)
    put_empty_state(server.url)
    client = OpaClient(ClientOptions(server.url))
    try:
        yield client, plain
    finally:
        client.close()
        server.stop()


# (name, key, tenant, method, path, headers, body, every rule the refusal must name)
ATTEMPTS: list[tuple[str, str, str, str, str, dict[str, str], dict[str, Any] | None, set[str]]] = [
    (
        "suspended tenant with a granted permission",
        "wayne-chat",
        "wayne",
        "POST",
        CHAT,
        {"x-nexus-model": "gpt-4o"},
        None,
        {"nexus.tenants.tenant_suspended"},
    ),
    (
        "served tenant, entitled plan, permission not held",
        "acme-chat",
        "acme",
        "POST",
        "/v1/tools/web-search:invoke",
        {},
        {"arguments": {"query": "x"}},
        {"nexus.rbac.permission_denied"},
    ),
    (
        "alias the tenant may name, routed outside its plan",
        "umbrella-chat",
        "umbrella",
        "POST",
        CHAT,
        {"x-nexus-model": "chat-default"},
        None,
        {"nexus.models.model_not_entitled"},
    ),
    (
        "retired prompt pinned on an entitled model",
        "acme-chat",
        "acme",
        "POST",
        CHAT,
        {"x-nexus-model": "gpt-4o", "x-nexus-prompt": "support-agent@1"},
        None,
        {"nexus.rollout.prompt_version_retired"},
    ),
    (
        "two refusals at once, one behind a granted permission",
        "wayne-chat",
        "wayne",
        "POST",
        CHAT,
        {"x-nexus-model": "gpt-4o", "x-nexus-prompt": "support-agent@1"},
        None,
        {"nexus.tenants.tenant_suspended", "nexus.rollout.prompt_version_retired"},
    ),
]


@pytest.mark.parametrize(
    ("key", "tenant", "method", "path", "headers", "body", "rules"),
    [attempt[1:] for attempt in ATTEMPTS],
    ids=[attempt[0] for attempt in ATTEMPTS],
)
def test_a_skip_fact_hides_no_refusal(
    enforcer: tuple[OpaClient, dict[str, str]],
    key: str,
    tenant: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    rules: set[str],
) -> None:
    client, plain = enforcer
    sent = {"authorization": f"Bearer {plain[key]}", "x-nexus-tenant": tenant, **headers}
    decision = client.decide(GatewayRequest(method, path, sent, body))
    assert decision.allowed is False
    assert rules <= {r.rule for r in decision.reasons}, decision.raw
