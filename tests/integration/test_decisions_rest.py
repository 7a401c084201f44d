"""The built bundle in a real OPA: a table of requests, every concern allowed and refused,
asked through OPA's REST API exactly as Envoy's plugin would ask. Every answer
matches the decision-result schema of nexus_contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from nexus_contract.decision import DecisionResult, decision_schema
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_dataplane.records import RecordSigner
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from tests.fixtures.cases import CASES, sign_records
from tests.fixtures.environment import record_signer
from tests.fixtures.gateway_opa import put_empty_state, start_gateway_opa

pytestmark = pytest.mark.opa


@pytest.fixture(scope="module")
def enforcer(
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
) -> Iterator[tuple[OpaClient, dict[str, str], RecordSigner]]:
    workdir = tmp_path_factory.mktemp("rest")
    server, plain = start_gateway_opa(workdir, opa, session_keys, signing_public_pem)
    put_empty_state(server.url)
    client = OpaClient(ClientOptions(server.url))
    try:
        yield client, plain, record_signer(workdir / "credentials")
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize(
    ("credential", "tenant", "method", "path", "headers", "body", "status", "rule"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(
    enforcer: tuple[OpaClient, dict[str, str], RecordSigner],
    credential: str | None,
    tenant: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    status: int,
    rule: str | None,
) -> None:
    client, plain, records = enforcer
    sent = {"x-nexus-tenant": tenant, **sign_records(headers, tenant, path, records)}
    if credential is not None:
        sent["authorization"] = f"Bearer {plain[credential]}"
    decision = client.decide(GatewayRequest(method, path, sent, body))
    jsonschema.validate(decision.raw, decision_schema())
    DecisionResult.model_validate(decision.raw)
    assert decision.http_status == status
    assert decision.allowed is (status == 200)
    if rule is not None:
        assert rule in {r.rule for r in decision.reasons}
        assert all(r.controls for r in decision.reasons)
    else:
        assert decision.reasons == ()
        assert "authorization" in decision.raw["request_headers_to_remove"]
