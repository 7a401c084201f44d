"""Delivery receipts through a real Envoy and our OPA, shipping to a real audit intake.

The plugin answers each Check in time by its own reckoning; Envoy is made not to
give the client that answer, in one named way per test. Envoy's gRPC access log
(rendered by the data plane's own ``envoy_config``) tells the plugin, the plugin
logs a receipt through the durable decision log, and the intake marks the
decision's leaf unanswered (receipt): the log no longer says the client got it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nexus_audit.catalog import load_catalogs
from nexus_audit.search import DecisionQuery
from nexus_audit.service import AuditLog
from nexus_contract.wire import DURABLE_LOG_PLUGIN
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_dataplane.process import free_port
from nexus_runtime.server import ServerThread
from tests.fixtures.gateway_stack import GatewayStack, gateway_stack
from tests.unit.audit.audit_app import create_app
from tests.unit.audit.harness import open_log

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

ENFORCER = "eu-west-1-a"
LAND_TIMEOUT_S = 30.0
DELAY_S = 0.6
"""How long the slow link holds OPA's answers: past Envoy's 250 ms ext_authz timeout."""


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = open_log(f"sqlite:///{tmp_path}/audit.db", load_catalogs(), lambda: datetime.now(UTC))
    yield log
    log.close()


@pytest.fixture
def intake_url(audit: AuditLog) -> Iterator[str]:
    with ServerThread(create_app(audit), "127.0.0.1", free_port()) as server:
        yield server.url


StackFactory = Callable[[Callable[[dict[str, Any]], None]], Any]


@pytest.fixture
def durable_stack(
    tmp_path: Path, opa: Opa, session_keys: KeyPaths, signing_public_pem: Path, intake_url: str
) -> StackFactory:
    """The gateway stack, decisions through the durable log to the intake, Envoy patched."""
    config: dict[str, Any] = {
        "labels": {"region": "eu-west-1", "enforcer": ENFORCER},
        "services": {
            "audit": {
                "url": f"{intake_url}/v1/opa",
                "credentials": {"bearer": {"token": "enforcer-token"}},
                "headers": {"x-nexus-enforcer": ENFORCER},
            }
        },
        "plugins": {
            DURABLE_LOG_PLUGIN: {"dir": str(tmp_path / "decision-log"), "service": "audit"}
        },
        "decision_logs": {"plugin": DURABLE_LOG_PLUGIN, "nd_builtin_cache": True},
    }

    def start(patch: Callable[[dict[str, Any]], None]) -> Any:
        return gateway_stack(
            tmp_path,
            opa,
            session_keys,
            signing_public_pem,
            enforcer_id=ENFORCER,
            opa_config=config,
            envoy_patch=patch,
        )

    return start


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (found,) = [
        f["typed_config"]
        for f in hcm["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    typed: dict[str, Any] = found
    return typed


def _send_two(stack: GatewayStack) -> None:
    """An allowed chat read and a refused unknown route; Envoy answers both with its own 503."""
    chat = {"x-nexus-tenant": "acme", **stack.record_headers("c-1001")}
    allowed = stack.send("GET", "/v1/chats/c-1001", key="acme-chat", headers=chat)
    refused = stack.send("GET", "/v1/unknown", key=None, headers={"x-nexus-tenant": "acme"})
    for answer in (allowed, refused):
        assert answer.status == 503, answer.body
        assert answer.decision_id is None, "Envoy did not give the client the plugin's answer"


def _leaves_land(audit: AuditLog, decisions: int, receipts: int) -> list[Any]:
    """The decision hits once ``decisions`` decisions and ``receipts`` receipts are logged."""
    deadline = time.monotonic() + LAND_TIMEOUT_S
    while time.monotonic() < deadline:
        with audit.db.engine.connect() as connection:
            kinds = [row[0] for row in connection.exec_driver_sql("SELECT kind FROM leaves")]
        if kinds.count("decision") >= decisions and kinds.count("receipt") >= receipts:
            break
        time.sleep(0.2)
    while audit.index_decisions():
        pass
    return list(audit.search_decisions(DecisionQuery()).hits)


def _assert_unanswered_by_receipt(hits: list[Any]) -> None:
    assert len(hits) == 2, hits
    assert {hit.allowed for hit in hits} == {True, False}, "the leaves keep the policy's verdict"
    for hit in hits:
        assert hit.shed is None, "the plugin answered in time: nothing was shed"
        assert hit.receipt == "ext_authz_error", hit
        assert not hit.answered


def test_an_answer_envoy_could_not_read_is_marked_undelivered(
    durable_stack: StackFactory, audit: AuditLog
) -> None:
    """Envoy answers the client its ext_authz failure instead of the plugin's answer (here:
    the answer is longer than Envoy will read from the ext_authz stream)."""

    def refuse_answers(config: dict[str, Any]) -> None:
        _ext_authz(config)["grpc_service"]["envoy_grpc"]["max_receive_message_length"] = 16

    with durable_stack(refuse_answers) as stack:
        _send_two(stack)
        hits = _leaves_land(audit, decisions=2, receipts=2)
    _assert_unanswered_by_receipt(hits)


class SlowLink:
    """A loopback TCP relay that hands OPA's bytes to Envoy ``delay`` seconds late.

    Requests reach OPA at once, so the plugin decides and answers long before its
    deadline; the answer reaches Envoy after Envoy's ext_authz timeout has fired."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.delay), daemon=True
            ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while chunk := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self.listener.close()


def test_an_answer_that_misses_envoys_timeout_is_marked_undelivered(
    durable_stack: StackFactory, audit: AuditLog
) -> None:
    links: list[SlowLink] = []

    def slow_answers(config: dict[str, Any]) -> None:
        clusters = config["static_resources"]["clusters"]
        (opa,) = [c for c in clusters if c["name"] == "opa"]
        endpoint = opa["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        link = SlowLink(endpoint["address"]["socket_address"]["port_value"], DELAY_S)
        links.append(link)
        slow = {**opa, "name": "opa-slow-link"}
        slow["load_assignment"] = {
            "cluster_name": "opa-slow-link",
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": link.port}}}}]}
            ],
        }  # fmt: skip
        clusters.append(slow)
        _ext_authz(config)["grpc_service"]["envoy_grpc"]["cluster_name"] = "opa-slow-link"

    try:
        with durable_stack(slow_answers) as stack:
            _send_two(stack)
            hits = _leaves_land(audit, decisions=2, receipts=2)
    finally:
        for link in links:
            link.close()
    _assert_unanswered_by_receipt(hits)
