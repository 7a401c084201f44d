"""End to end: one request's trace, client → real Envoy → our ext_authz span in real OPA →
upstream, stored in a real Jaeger and read back through its query API; its decision id
is the audit leaf's. The control plane (bundle polls, status reports, decision-log
intake) traces to the same Jaeger."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from nexus_audit.tables import Leaf
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.environment import Environment, credentials_overlay
from tests.fixtures.jaeger import Jaeger

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
CHECK_SPAN = "nexus.extauthz.Check"
T = TypeVar("T")


def until(found: Callable[[], T | None], timeout_s: float) -> T:
    """``found()``'s first non-None answer; AssertionError if none comes in time."""
    deadline = time.monotonic() + timeout_s
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not found within {timeout_s} s")
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    server = Jaeger(tmp_path_factory.mktemp("jaeger"))
    try:
        server.start_and_wait()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths, jaeger: Jaeger
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("traced")
    environment = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir / 'control.db'}",
        plain=credentials_overlay(workdir / "credentials"),
        tracing=jaeger.tracing(),
    )
    try:
        environment.start()
        yield environment
    finally:
        environment.stop()


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def test_one_request_is_one_trace_from_envoy_through_the_check_to_the_upstream_and_audit(
    traced: Environment, jaeger: Jaeger
) -> None:
    # The client is this process's instrumented httpx: its span's W3C context goes out
    # as ``traceparent``, and Envoy forwards the trace's context to the upstream.
    response = traced.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
    assert response.status_code == 200, response.text
    decision_id = response.headers["x-nexus-decision-id"]
    assert uuid.UUID(decision_id)
    _, trace_id, _, flags = response.json()["headers"]["traceparent"].split("-")
    assert flags == "01", "the request was sampled"

    def whole() -> dict[str, Any] | None:
        try:
            trace = jaeger.trace(trace_id)
        except KeyError:
            return None
        services = {_service(trace, s) for s in trace["spans"]}
        wanted = {"nexus-envoy-eu-west-1-1", "nexus-opa-eu-west-1-1", "nexus-upstream"}
        return trace if wanted <= services else None

    trace = until(whole, timeout_s=20)
    spans = {s["spanID"]: s for s in trace["spans"]}
    (check,) = [s for s in spans.values() if s["operationName"] == CHECK_SPAN]
    (upstream,) = [s for s in spans.values() if _service(trace, s) == "nexus-upstream"]
    envoy = [s for s in spans.values() if _service(trace, s).startswith("nexus-envoy-")]

    # The Check span is a child of Envoy's ext_authz span, the whole under the client's.
    def parent(span: dict[str, Any]) -> dict[str, Any]:
        (ref,) = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        return spans[ref]

    # Client span → Envoy ingress → {Envoy's ext_authz call → our Check, the upstream}.
    (ingress,) = [s for s in envoy if s["operationName"] == "ingress"]
    assert parent(check) in envoy and parent(check) is not ingress
    assert parent(parent(check)) is ingress
    assert parent(upstream) is ingress
    assert _tags(parent(ingress))["span.kind"] == "client", "the client's own span is the root"

    tags = _tags(check)
    assert tags["nexus.decision_id"] == decision_id
    assert tags["nexus.tenant"] == "acme"
    assert tags["nexus.route"] == CHAT
    assert tags["nexus.outcome"] == "allowed"
    assert int(tags["nexus.eval_ns"]) > 0
    assert _tags(upstream)["nexus.decision_id"] == decision_id

    # The trace's decision id is the audit leaf's.
    def leaf() -> Leaf | None:
        assert traced.audit is not None
        with traced.audit.db.session() as session:
            return session.scalars(select(Leaf).where(Leaf.decision_id == decision_id)).first()

    assert until(leaf, timeout_s=20).tenant == "acme"

    # The control plane traced the enforcer's bundle polls, its status reports and the
    # decision-log intake (each a server span, from OPA's traced HTTP client).
    def control_operations() -> set[str] | None:
        ops = set(jaeger.operations("nexus-control-plane"))
        wanted = {
            "GET /v1/opa/bundles/{region}/{bundle}",
            "POST /v1/opa/status",
            "POST /v1/opa/logs",
        }
        return ops if wanted <= ops else None

    until(control_operations, timeout_s=20)
