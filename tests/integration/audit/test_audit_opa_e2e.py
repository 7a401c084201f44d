"""A real OPA ships its decision logs to the audit intake: every decision lands exactly once.

OPA runs the signed gateway bundle with its decision_logs plugin pointed at a
server hosting the audit router. Decisions are made through OPA's REST API
(which logs them like ext_authz decisions); then the intake refuses a few
uploads with 503 and OPA's retries must still land each decision once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from nexus_audit.service import AuditLog
from nexus_audit.verify import verify_log
from nexus_control.authoring.bundle import BuiltBundle
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import free_port
from nexus_dataplane.request import GatewayRequest
from nexus_runtime.server import ServerThread
from tests.conftest import TEST_KEY_ID
from tests.integration.audit.conftest import LogFactory
from tests.unit.audit.audit_app import create_app
from tests.unit.audit.harness import LOG_KEY

pytestmark = [pytest.mark.opa, pytest.mark.postgres]

DECISION_URL = "/v1/data/nexus/envoy/authz/decision"
LAND_TIMEOUT_S = 25.0
PROMPT = "the patient's diagnosis is prompt-text-c41d"
"""A chat's prompt: the policy reads its body, the audit log must never hold it."""


class Refusals:
    """Makes the intake answer 503 to the next ``n`` uploads, counting the ones it refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending = 0
        self.refused = 0
        self.accepted_uploads = 0

    def refuse_next(self, n: int) -> None:
        with self._lock:
            self.pending = n

    def take(self) -> bool:
        with self._lock:
            if self.pending:
                self.pending -= 1
                self.refused += 1
                return True
            return False


@pytest.fixture
def stack(
    make_pg_log: LogFactory,
    opa_bin: Path,
    tmp_path: Path,
    built_gateway: BuiltBundle,
    signing_public_pem: Path,
) -> Iterator[tuple[AuditLog, OpaServer, Refusals]]:
    log = make_pg_log(every_s=1.0)
    refusals = Refusals()
    app = create_app(log)

    @app.middleware("http")
    async def flaky_intake(request: Request, call_next: Any) -> Response:
        if request.url.path == "/v1/opa/logs":
            if refusals.take():
                await request.body()
                return JSONResponse({"error": {"code": "unavailable", "message": "test"}}, 503)
            refusals.accepted_uploads += 1
        response: Response = await call_next(request)
        return response

    server = ServerThread(app, "127.0.0.1", free_port())
    server.start()
    opa = OpaServer(
        opa_bin,
        tmp_path / "opa",
        config={
            "services": {
                "audit": {
                    "url": f"{server.url}/v1/opa",
                    "credentials": {"bearer": {"token": "enforcer-token"}},
                    "headers": {"x-nexus-enforcer": "eu-west-1-a"},
                }
            },
            "decision_logs": {
                "service": "audit",
                "reporting": {"min_delay_seconds": 1, "max_delay_seconds": 1},
            },
            "labels": {"region": "eu-west-1", "enforcer": "eu-west-1-a"},
        },
        args=[
            "--bundle", str(built_gateway.path),
            "--verification-key", str(signing_public_pem),
            "--verification-key-id", TEST_KEY_ID,
        ],
    )  # fmt: skip
    try:
        opa.start_and_wait(bundles=False, timeout_s=30)
        yield log, opa, refusals
    finally:
        opa.stop()
        server.stop()


def _requests(n: int, round_: str) -> list[GatewayRequest]:
    shapes = [
        GatewayRequest("POST", "/v1/chat/completions",
                       {"authorization": "Bearer nx-unknown", "x-nexus-tenant": "acme",
                        "x-nexus-subject": f"user-{round_}"},
                       {"max_tokens": 5, "messages": [{"role": "user", "content": PROMPT}]}),
        GatewayRequest("GET", "/v1/unknown", {"x-nexus-tenant": "acme"}),
        GatewayRequest("DELETE", f"/v1/subjects/user-{round_}",
                       {"authorization": "Bearer x.y.z", "x-nexus-tenant": "globex"}),
        GatewayRequest("POST", "/v1/tools/web-search:invoke", {}, {"arguments": {"q": "x"}}),
    ]  # fmt: skip
    return [shapes[i % len(shapes)] for i in range(n)]


def _decide(opa: OpaServer, requests: list[GatewayRequest]) -> list[str]:
    ids = []
    with httpx.Client(base_url=opa.url, timeout=10) as client:
        for request in requests:
            response = client.post(DECISION_URL, json={"input": request.to_opa_input()})
            response.raise_for_status()
            body = response.json()
            assert body["result"]["allowed"] is False
            ids.append(body["decision_id"])
    return ids


def _wait_until_logged(log: AuditLog, decision_ids: list[str]) -> None:
    deadline = time.monotonic() + LAND_TIMEOUT_S
    while True:
        with log.db.engine.connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT count(*) FROM leaves WHERE decision_id = ANY(%(ids)s)",
                {"ids": decision_ids},
            ).scalar_one()
        if found == len(decision_ids):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"only {found} of {len(decision_ids)} decisions reached the audit log")
        time.sleep(0.2)


def test_every_decision_lands_exactly_once_even_when_uploads_are_refused(
    stack: tuple[AuditLog, OpaServer, Refusals], built_gateway: BuiltBundle
) -> None:
    log, opa, refusals = stack

    first = _decide(opa, _requests(40, "a"))
    _wait_until_logged(log, first)
    assert log.size() == 40

    refusals.refuse_next(3)
    second = _decide(opa, _requests(30, "b"))
    _wait_until_logged(log, second)
    time.sleep(1.5)  # one more reporting round: nothing may arrive twice

    assert refusals.refused == 3
    assert refusals.accepted_uploads >= 2
    assert log.size() == 70 == len(set(first + second))
    entry = orjson.loads(log.leaf(decision_id=second[0]).entry)
    assert (entry["region"], entry["enforcer"]) == ("eu-west-1", "eu-west-1-a")
    assert list(entry["bundles"].values()) == [built_gateway.revision]
    assert entry["controls"] and entry["outcome"]["allowed"] is False
    assert entry["http_path"] in {"/v1/chat/completions", "/v1/unknown", "/v1/subjects/{id}",
                                  "/v1/tools/web-search:invoke"}  # fmt: skip
    subject_erasure = orjson.loads(log.leaf(decision_id=second[2]).entry)
    assert subject_erasure["http_path"] == "/v1/subjects/{id}"

    masked = orjson.loads(log.payload(log.leaf(decision_id=second[0]).index).plaintext or b"")
    http = masked["input"]["attributes"]["request"]["http"]
    assert http["headers"]["authorization"].startswith("sha256:")  # OPA's mask, not the key
    # The chat's body is reduced to its output bounds: no prompt in the payload or the leaf.
    assert masked["input"]["parsed_body"] == {"max_tokens": 5}
    assert "body" not in http
    assert b"prompt-text-c41d" not in (
        log.payload(log.leaf(decision_id=second[0]).index).plaintext or b""
    )
    assert b"prompt-text-c41d" not in log.leaf(decision_id=second[0]).entry

    log.checkpoint()
    proof = log.inclusion_proof(decision_id=first[0])
    proof.verify(LOG_KEY.verifier, leaf=log.leaf(decision_id=first[0]).entry)
    assert verify_log(log.db, LOG_KEY.verifier).size == 70
