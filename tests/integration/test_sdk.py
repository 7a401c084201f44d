"""The Python SDK asks the real OPA what Envoy would ask, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_control.authoring.bundle import BuiltBundle
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import (
    AsyncOpaClient,
    ClientOptions,
    OpaClient,
    OpaClientError,
    UndefinedDecisionError,
)
from tests.fixtures.gateway_opa import signed_bundle_args

pytestmark = pytest.mark.opa


@pytest.fixture(scope="module")
def opa_server(
    tmp_path_factory: pytest.TempPathFactory,
    opa_bin: Path,
    built_gateway: BuiltBundle,
    signing_public_pem: Path,
) -> Iterator[OpaServer]:
    server = OpaServer(
        opa_bin,
        tmp_path_factory.mktemp("sdk"),
        args=signed_bundle_args(built_gateway.path, signing_public_pem),
    )
    server.start_and_wait(bundles=False)
    yield server
    server.stop()


REQUEST = GatewayRequest(
    "POST", "/v1/tools/web-search:invoke", {"x-nexus-tenant": "acme"}, {"arguments": {"query": "x"}}
)


def test_sync_client_returns_a_typed_decision(opa_server: OpaServer) -> None:
    with OpaClient(ClientOptions(opa_server.url)) as client:
        assert client.healthy()
        decision = client.decide(REQUEST)
    assert decision.allowed is False
    assert decision.http_status == 401
    assert decision.reasons[0].rule == "nexus.identity.credential_missing"
    assert "SOC2:CC6.1" in decision.reasons[0].controls


def test_async_client_matches_the_sync_client(opa_server: OpaServer) -> None:
    async def ask() -> object:
        async with AsyncOpaClient(ClientOptions(opa_server.url)) as client:
            assert await client.healthy()
            return await client.decide(REQUEST)

    decision = asyncio.run(ask())
    assert decision.http_status == 401  # type: ignore[attr-defined]


def test_undefined_path_and_unreachable_server_are_errors(opa_server: OpaServer) -> None:
    undefined = ClientOptions(opa_server.url, decision_path="nexus/nothing/here")
    with OpaClient(undefined) as client, pytest.raises(UndefinedDecisionError):
        client.decide(REQUEST)
    options = ClientOptions("http://127.0.0.1:9", timeout=httpx.Timeout(0.5))
    with OpaClient(options) as client, pytest.raises(OpaClientError, match="cannot reach"):
        client.decide(REQUEST)


def test_client_uses_the_ca_bundle_and_certificate_it_is_given(tmp_path: Path) -> None:
    options = ClientOptions(
        "https://127.0.0.1:9",
        ca_bundle=tmp_path / "ca.pem",
        client_cert=(tmp_path / "c.pem", tmp_path / "k.pem"),
    )
    kwargs = options.client_kwargs()
    assert kwargs["verify"] == str(tmp_path / "ca.pem")
    assert kwargs["cert"] == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
