"""The remaining budget, published exactly in the signed state bundle and enforced by real OPA.

Usage is counted by the control plane's own code (`usage.record_usage`) against the
caps compiled from bundles/gateway; the state document is signed as the state bundle
is; the real OPA holding the signed gateway bundle decides on what it states.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.api.app import create_control_plane
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.policyset import resolve
from nexus_control.budgets import usage
from nexus_control.budgets.spend import InProcessSpendStore, period_of
from nexus_control.budgets.state import build_state_bundle
from nexus_control.plane import ControlPlane
from nexus_control.settings import ControlSettings
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from tests.conftest import GATEWAY
from tests.fixtures.gateway_opa import start_gateway_opa

pytestmark = pytest.mark.opa

CHAT = "/v1/chat/completions"


@pytest.fixture
def plane(tmp_path: Path, opa: Opa) -> Iterator[ControlPlane]:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        keys_dir=tmp_path / "keys",
        regions=["eu-west-1"],
    )
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()
    control.db.dispose()


@pytest.fixture(scope="module")
def config() -> CompiledConfig:
    return compile_data(resolve(load_bundle(GATEWAY)), approval_jwks="")


def spend(
    plane: ControlPlane,
    store: InProcessSpendStore,
    config: CompiledConfig,
    tenant: str,
    cost: float,
    *,
    model: str = "gpt-4o-mini",
    feature: str | None = None,
) -> None:
    report = usage.UsageReport(
        request_id=f"worst-{uuid.uuid4()}",
        tenant=tenant,
        model=model,
        feature=feature,
        tokens=100,
        cost_usd=cost,
    )
    with plane.db.session() as session:
        assert usage.record_usage(session, store, config, report).counted


def published(
    plane: ControlPlane, store: InProcessSpendStore, config: CompiledConfig
) -> dict[str, Any]:
    """The ``nexus_state`` document as the signed state bundle carries it."""
    with plane.db.session() as session:
        document = usage.state_document(session, store, config, period_of(datetime.now(UTC)))
    key, kid = plane.keyring.signer(KeyPurpose.BUNDLE)
    archive = build_state_bundle(document, key=key, key_id=kid).archive
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("nexus_state/data.json"))
        handle = tar.extractfile(member)
        assert handle is not None
        data: dict[str, Any] = json.loads(handle.read())
    return data


def test_the_state_bundle_publishes_what_each_cap_has_left_exactly(
    plane: ControlPlane, config: CompiledConfig
) -> None:
    store = InProcessSpendStore()
    spend(plane, store, config, "umbrella", 49.9)
    spend(plane, store, config, "acme", 1234.567891, model="gpt-4.1", feature="support-chat")
    spend(plane, store, config, "acme", 0.000001)
    state = published(plane, store, config)
    # $50 cap, $49.90 spent: $0.10 left to the micro-dollar, where the ratio says 0.998.
    assert state["spend"]["umbrella"]["ratio"] == 0.998
    assert state["spend"]["umbrella"]["remaining"] == {
        "total": 100_000,
        "models": {},
        "features": {},
    }
    assert state["spend"]["acme"]["remaining"] == {
        "total": 50_000_000_000 - 1_234_567_892,
        "models": {"gpt-4.1": 15_000_000_000 - 1_234_567_891},
        "features": {"support-chat": 20_000_000_000 - 1_234_567_891},
    }


def test_an_overspent_cap_publishes_a_negative_remainder(
    plane: ControlPlane, config: CompiledConfig
) -> None:
    store = InProcessSpendStore()
    spend(plane, store, config, "umbrella", 50.25)
    assert published(plane, store, config)["spend"]["umbrella"]["remaining"]["total"] == -250_000


@pytest.fixture
def enforcer(
    tmp_path: Path, opa: Opa, session_keys: KeyPaths, signing_public_pem: Path
) -> Iterator[tuple[OpaServer, OpaClient, dict[str, str]]]:
    server, plain = start_gateway_opa(tmp_path / "opa", opa, session_keys, signing_public_pem)
    client = OpaClient(ClientOptions(server.url))
    try:
        yield server, client, plain
    finally:
        client.close()
        server.stop()


def put_state(server: OpaServer, state: dict[str, Any]) -> None:
    httpx.put(f"{server.url}/v1/data/nexus_state", json=state, timeout=5).raise_for_status()


def test_two_chats_that_fit_alone_but_not_together_the_second_is_refused_once_counted(
    plane: ControlPlane,
    config: CompiledConfig,
    enforcer: tuple[OpaServer, OpaClient, dict[str, str]],
) -> None:
    server, client, plain = enforcer
    store = InProcessSpendStore()
    spend(plane, store, config, "umbrella", 49.9)  # $0.10 left
    put_state(server, published(plane, store, config))
    headers = {
        "x-nexus-tenant": "umbrella",
        "x-nexus-model": "gpt-4o-mini",
        "authorization": f"Bearer {plain['umbrella-chat']}",
    }
    body = {"max_tokens": 100_000, "messages": [{"role": "user", "content": "summarise"}]}
    chat = GatewayRequest("POST", CHAT, headers, body)
    # At worst 100 000 output tokens at $0.60/Mtok plus the body's bytes at $0.15/Mtok:
    # just over $0.06, so each fits in $0.10 alone and two do not.
    first = client.decide(chat)
    assert first.allowed, first.reasons
    assert client.decide(chat).allowed, "nothing was counted yet: the state is unchanged"
    spend(plane, store, config, "umbrella", 0.06)
    put_state(server, published(plane, store, config))
    second = client.decide(chat)
    assert second.http_status == 429
    assert [r.rule for r in second.reasons] == ["nexus.cost.worst_case_exceeds_remaining"]
    assert 'the budget of tenant "umbrella" has left ($0.040000)' in second.reasons[0].message
    assert second.reasons[0].controls
    # A smaller request still fits what is left.
    small = GatewayRequest("POST", CHAT, headers, {**body, "max_tokens": 1_000})
    assert client.decide(small).allowed
