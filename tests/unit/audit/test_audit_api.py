"""The audit router: who may call what, the answers' media types, and one error shape."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.evidence import verify_archive
from nexus_audit.proof import TlogProof
from nexus_audit.service import AuditLog
from tests.unit.audit.audit_app import bearer, create_app
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, events, gzip_batch

PERIOD = {"since": "2026-11-02", "until": "2026-11-03T00:00:00Z"}


@pytest.fixture
def client(audit_log: AuditLog) -> TestClient:
    batch = events(6, start=T0)
    audit_log.ingest_upload(gzip_batch(batch), "gzip")
    audit_log.checkpoint()
    return TestClient(create_app(audit_log))


def _error(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and body["error"]["code"] == code
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("method", "path", "allowed", "refused"),
    [
        ("GET", "/v1/audit/checkpoint", ["author-token", "enforcer-token"], []),
        (
            "GET",
            "/v1/audit/proofs/inclusion?index=1",
            ["compliance-token", "operator-token"],
            ["author-token", "enforcer-token"],
        ),
        (
            "GET",
            "/v1/audit/proofs/consistency?old_size=2",
            ["compliance-token", "operator-token"],
            ["enforcer-token"],
        ),
        (
            "GET",
            "/v1/audit/coverage?framework=soc2&since=2026-11-02&until=2026-11-03",
            ["compliance-token"],
            ["operator-token"],
        ),
        ("POST", "/v1/audit/erasure", ["compliance-token"], ["operator-token", "enforcer-token"]),
        (
            "GET",
            "/v1/audit/evidence?framework=soc2&control=CC6.1&since=2026-11-02&until=2026-11-03"
            "&tenant=acme",
            ["compliance-token"],
            ["operator-token"],
        ),
        ("POST", "/v1/opa/logs", [], ["compliance-token", "operator-token"]),
    ],
)
def test_each_route_admits_only_its_roles(
    client: TestClient, method: str, path: str, allowed: list[str], refused: list[str]
) -> None:
    body = {"json": {"tenant": "acme", "subject": "nobody"}} if "erasure" in path else {}
    assert client.request(method, path, **body).status_code == 401  # type: ignore[arg-type]
    for token in allowed:
        response = client.request(method, path, headers=bearer(token), **body)  # type: ignore[arg-type]
        assert response.status_code in (200, 202), (token, response.text)
    for token in refused:
        response = client.request(method, path, headers=bearer(token), **body)  # type: ignore[arg-type]
        _error(response, 403, "forbidden")


def test_the_checkpoint_is_served_as_a_signed_note(client: TestClient) -> None:
    response = client.get("/v1/audit/checkpoint", headers=bearer("author-token"))

    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert Checkpoint.open(response.text, LOG_KEY.verifier).size == 6


def test_an_inclusion_proof_is_served_as_a_tlog_proof(
    client: TestClient, audit_log: AuditLog
) -> None:
    decision = audit_log.leaf(index=4).decision_id
    response = client.get(
        f"/v1/audit/proofs/inclusion?decision_id={decision}", headers=bearer("compliance-token")
    )

    proof = TlogProof.parse(response.text)
    assert proof.verify(LOG_KEY.verifier, leaf=audit_log.leaf(index=4).entry).size == 6


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "invalid_request"),
        ("index=1&decision_id=x", 400, "invalid_request"),
        ("index=-1", 400, "invalid_request"),
        ("index=99", 404, "not_found"),
        ("decision_id=nope", 404, "not_found"),
        ("index=1&size=5", 404, "not_found"),
    ],
)
def test_bad_inclusion_requests_get_the_error_shape(
    client: TestClient, query: str, status: int, code: str
) -> None:
    response = client.get(f"/v1/audit/proofs/inclusion?{query}", headers=bearer("operator-token"))
    _error(response, status, code)


def test_a_consistency_proof_is_served_as_json(client: TestClient, audit_log: AuditLog) -> None:
    old = audit_log.checkpoint_signer.at(6)
    audit_log.ingest_upload(gzip_batch(events(5, subject="s")), "gzip")
    new = audit_log.checkpoint()
    body = client.get(
        "/v1/audit/proofs/consistency?old_size=6", headers=bearer("operator-token")
    ).json()

    assert old is not None
    assert (body["old_size"], body["new_size"]) == (6, 11)
    assert body["old_checkpoint"] == old.note and body["new_checkpoint"] == new.note
    merkle.verify_consistency(
        6,
        11,
        [base64.b64decode(h) for h in body["proof"]],
        old.checkpoint.root_hash,
        new.checkpoint.root_hash,
    )
    _error(
        client.get(
            "/v1/audit/proofs/consistency?old_size=7&new_size=6", headers=bearer("operator-token")
        ),
        400,
        "invalid_request",
    )
    _error(
        client.get("/v1/audit/proofs/consistency", headers=bearer("operator-token")),
        400,
        "invalid_request",
    )


def test_coverage_over_http(client: TestClient) -> None:
    body = client.get(
        "/v1/audit/coverage",
        params={"framework": "soc2", **PERIOD},
        headers=bearer("compliance-token"),
    ).json()
    cc61 = next(c for c in body["controls"] if c["id"] == "CC6.1")
    assert (cc61["allowed"], cc61["denied"]) == (3, 3)
    _error(
        client.get(
            "/v1/audit/coverage",
            params={"framework": "nist80053", **PERIOD},
            headers=bearer("compliance-token"),
        ),
        400,
        "unknown_framework",
    )
    _error(
        client.get(
            "/v1/audit/coverage",
            params={"framework": "soc2", "since": "soon", "until": "x"},
            headers=bearer("compliance-token"),
        ),
        400,
        "invalid_request",
    )


def test_erasure_over_http_is_logged_with_the_callers_name(
    client: TestClient, audit_log: AuditLog
) -> None:
    requested = client.post(
        "/v1/audit/erasure",
        json={"tenant": "acme", "reference": "DSR-1"},
        headers=bearer("compliance-token"),
    )
    assert requested.status_code == 202, requested.text
    request_id = requested.json()["id"]
    same = client.post(
        f"/v1/audit/erasure/{request_id}/approve", headers=bearer("compliance-token")
    )
    _error(same, 403, "same_person")
    response = client.post(
        f"/v1/audit/erasure/{request_id}/approve", headers=bearer("compliance-2-token")
    )
    assert response.json()["keys_destroyed"] == 1
    event = audit_log.leaf(index=response.json()["event_index"])
    assert b'"actor":"second-dpo@nexus.example"' in event.entry
    assert b'"requested_by":"dpo@nexus.example"' in event.entry
    message = _error(
        client.post("/v1/audit/erasure", json={"subject": "x"}, headers=bearer("compliance-token")),
        400,
        "invalid_request",
    )
    assert message.startswith("tenant:")


def test_the_evidence_archive_is_downloaded_and_verifies(
    client: TestClient, tmp_path: object
) -> None:
    response = client.get(
        "/v1/audit/evidence",
        params={"framework": "soc2", "control": "CC6.1", "tenant": "acme", **PERIOD},
        headers=bearer("compliance-token"),
    )
    assert response.headers["content-type"] == "application/gzip"
    assert "evidence-soc2-CC6.1.tar.gz" in response.headers["content-disposition"]
    assert verify_archive(response.content, str(LOG_KEY.verifier)).records == 6
    _error(
        client.get(
            "/v1/audit/evidence",
            params={"framework": "soc2", "control": "CC0.0", "tenant": "acme", **PERIOD},
            headers=bearer("compliance-token"),
        ),
        400,
        "unknown_control",
    )


def test_no_checkpoint_yet_is_a_404(audit_log: AuditLog) -> None:
    client = TestClient(create_app(audit_log))
    _error(client.get("/v1/audit/checkpoint", headers=bearer("author-token")), 404, "no_checkpoint")


def test_since_defaults_to_utc_midnight(client: TestClient) -> None:
    # The decisions are at 09:00:00..09:00:05 UTC on 2 Nov; a local midnight might miss them.
    body = client.get(
        "/v1/audit/coverage",
        params={"framework": "soc2", "since": "2026-11-02", "until": "2026-11-02T09:00:03Z"},
        headers=bearer("compliance-token"),
    ).json()
    assert body["summary"]["decisions"] > 0
