"""Decision-log intake: OPA's gzip batches validated as a whole, appended once per decision id."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from nexus_audit import merkle
from nexus_audit.payloads import PayloadStatus
from nexus_audit.search import hit_of
from nexus_audit.service import AuditLog
from tests.unit.audit.audit_app import bearer, create_app
from tests.unit.audit.opa_events import decision_event, events, gzip_batch, shed_event

ENFORCER = {
    **bearer("enforcer-token"),
    "content-encoding": "gzip",
    "x-nexus-enforcer": "eu-west-1-a",
}


@pytest.fixture
def client(audit_log: AuditLog) -> TestClient:
    return TestClient(create_app(audit_log))


def _post(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post("/v1/opa/logs", content=body, headers={**ENFORCER, **headers})


def _refused(client: TestClient, audit_log: AuditLog, body: bytes, status: int, code: str) -> str:
    response = _post(client, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert audit_log.size() == 0, "a refused batch must append nothing"
    return str(error["message"])


def test_a_batch_is_appended_and_counted(client: TestClient, audit_log: AuditLog) -> None:
    response = _post(client, gzip_batch(events(5)))

    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "duplicates": 0, "size": 5, "flagged": 0}
    assert audit_log.size() == 5


def test_redelivered_and_repeated_decisions_add_no_leaf(
    client: TestClient, audit_log: AuditLog
) -> None:
    batch = events(4)
    first = _post(client, gzip_batch([*batch, batch[1]])).json()
    second = _post(client, gzip_batch([*batch, *events(2, subject="s")])).json()

    assert first == {"accepted": 4, "duplicates": 1, "size": 4, "flagged": 0}
    assert second == {"accepted": 2, "duplicates": 4, "size": 6, "flagged": 0}


def test_an_uncompressed_batch_is_accepted_too(client: TestClient) -> None:
    response = client.post(
        "/v1/opa/logs",
        content=json.dumps(events(2)).encode(),
        headers={**bearer("enforcer-token"), "x-nexus-enforcer": "eu-west-1-a"},
    )
    assert response.json()["accepted"] == 2


def test_malformed_gzip_is_refused(client: TestClient, audit_log: AuditLog) -> None:
    _refused(client, audit_log, b"\x1f\x8b\x08\x00garbage", 400, "invalid_gzip")


def test_truncated_gzip_is_refused(client: TestClient, audit_log: AuditLog) -> None:
    body = gzip_batch(events(3))
    message = _refused(client, audit_log, body[: len(body) // 2], 400, "invalid_gzip")
    assert "truncated" in message


def test_malformed_json_is_refused(client: TestClient, audit_log: AuditLog) -> None:
    _refused(client, audit_log, gzip.compress(b'[{"decision_id": '), 400, "invalid_json")


def test_nan_and_infinity_are_not_json(client: TestClient, audit_log: AuditLog) -> None:
    body = json.dumps(events(1)).replace('"req_id": 7', '"req_id": NaN').encode()
    assert b"NaN" in body
    message = _refused(client, audit_log, gzip.compress(body), 400, "invalid_json")
    assert "NaN" in message


def test_an_unsupported_content_encoding_is_refused(
    client: TestClient, audit_log: AuditLog
) -> None:
    response = _post(client, gzip_batch(events(1)), **{"content-encoding": "br"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_encoding"
    assert audit_log.size() == 0


def test_a_json_object_instead_of_an_array_is_refused(
    client: TestClient, audit_log: AuditLog
) -> None:
    message = _refused(
        client, audit_log, gzip.compress(b'{"decision_id": "x"}'), 400, "invalid_json"
    )
    assert "array" in message


def test_a_missing_decision_id_names_the_event_and_field(
    client: TestClient, audit_log: AuditLog
) -> None:
    batch = events(3)
    del batch[2]["decision_id"]
    message = _refused(client, audit_log, gzip_batch(batch), 400, "invalid_event")
    assert message.startswith("event 2: decision_id:")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e["labels"].pop("region"), "labels.region"),
        (lambda e: e.update(timestamp="yesterday"), "timestamp"),
        (lambda e: e.update(timestamp="2026-11-02T09:00:00"), "timestamp"),
        (lambda e: e.pop("result"), "result"),
        (lambda e: e.update(result="allow"), "result"),
        (lambda e: e["result"].pop("allowed"), "result.allowed"),
        (lambda e: e["result"].update(allowed="yes"), "result.allowed"),
        (lambda e: e["result"].update(http_status=99), "result.http_status"),
        (
            lambda e: e["result"]["reasons"][0].update(controls="SOC2:CC6.1"),
            "result.reasons.0.controls",
        ),
        (lambda e: e.update(rule_labels=[{"controls": [7]}]), "rule_labels.0.controls.0"),
        (lambda e: e.update(decision_id=""), "decision_id"),
        (lambda e: e.update(path=None), "path"),
        (lambda e: e["input"].update(big=2**70), "input"),
    ],
)
def test_an_invalid_event_rejects_the_whole_batch_naming_event_and_field(
    client: TestClient, audit_log: AuditLog, change: Any, field: str
) -> None:
    batch = events(4, allowed=False)
    change(batch[3])
    message = _refused(client, audit_log, gzip_batch(batch), 400, "invalid_event")
    assert message.startswith(f"event 3 (decision {batch[3].get('decision_id')}): {field}") or (
        message.startswith(f"event 3: {field}")
    ), message


@pytest.mark.parametrize("where", ["reasons", "rule_labels"])
def test_an_unknown_control_is_refused_with_422_naming_it(
    client: TestClient, audit_log: AuditLog, where: str
) -> None:
    bad = (
        decision_event(controls=("SOC2:CC6.1", "SOC2:CC9.9"))
        if where == "reasons"
        else decision_event(allowed=True, rule_labels=("ISO27001:A.5.99",))
    )
    message = _refused(client, audit_log, gzip_batch([*events(2), bad]), 422, "unknown_control")
    assert ("SOC2:CC9.9" if where == "reasons" else "ISO27001:A.5.99") in message
    assert message.startswith(f"event 2 (decision {bad['decision_id']})")


def test_an_oversized_compressed_upload_is_refused(make_log: Any) -> None:
    log = make_log(max_bytes=2000)
    client = TestClient(create_app(log))
    body = gzip.compress(json.dumps(events(40)).encode(), compresslevel=0)
    response = _post(client, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert log.size() == 0


def test_a_gzip_bomb_is_refused_by_its_decompressed_size(make_log: Any) -> None:
    log = make_log(max_bytes=64 * 1024)
    client = TestClient(create_app(log))
    bomb = gzip.compress(b"[" + b" " * (10 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    response = _post(client, bomb)
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]["message"]


def test_too_many_events_are_refused(make_log: Any) -> None:
    log = make_log(max_events=10)
    response = _post(TestClient(create_app(log)), gzip_batch(events(11)))
    assert response.status_code == 413
    assert log.size() == 0


def test_uploads_need_the_enforcer_role(client: TestClient) -> None:
    body = gzip_batch(events(1))
    assert client.post("/v1/opa/logs", content=body).status_code == 401
    response = client.post("/v1/opa/logs", content=body, headers=bearer("compliance-token"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_an_enforcer_cannot_log_for_another_enforcer_or_region(
    client: TestClient, audit_log: AuditLog
) -> None:
    other = _post(client, gzip_batch(events(1, enforcer="us-east-1-a")))
    assert other.status_code == 403
    assert "us-east-1-a" in other.json()["error"]["message"]
    security = orjson.loads(audit_log.leaf(index=0).entry)
    assert security["type"] == "security.enforcer_mismatch"
    assert audit_log.size() == 1, "only the security event, no decision"
    region_wide = client.post(
        "/v1/opa/logs",
        content=gzip_batch(events(2, enforcer="eu-west-1-b")),
        headers={
            **bearer("region-token"),
            "content-encoding": "gzip",
            "x-nexus-enforcer": "eu-west-1-b",
        },
    )
    assert region_wide.status_code == 200
    wrong_region = client.post(
        "/v1/opa/logs",
        content=gzip_batch(events(1, region="us-east-1")),
        headers={
            **bearer("region-token"),
            "content-encoding": "gzip",
            "x-nexus-enforcer": "eu-west-1-a",
        },
    )
    assert wrong_region.status_code == 403


def test_the_leaf_entry_is_compact_canonical_and_holds_no_secret_or_id(
    audit_log: AuditLog,
) -> None:
    event = decision_event(
        subject="alice", allowed=False, method="GET", path="/v1/chats/chat-of-jane-42?token=abc"
    )
    audit_log.ingest_upload(gzip_batch([event]), "gzip")
    leaf = audit_log.leaf(decision_id=event["decision_id"])
    entry = orjson.loads(leaf.entry)

    assert leaf.entry == orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    assert leaf.leaf_hash == merkle.leaf_hash(leaf.entry)
    assert entry == {
        "v": 1,
        "kind": "decision",
        "decision_id": event["decision_id"],
        "time": "2026-11-02T09:00:00.000000Z",
        "tenant": "acme",
        "region": "eu-west-1",
        "enforcer": "eu-west-1-a",
        "bundles": {"nexus": "1b74bc1b0c4a"},
        "path": "nexus/envoy/authz/decision",
        "method": "GET",
        "http_path": "/v1/chats/{id}",
        "outcome": {"allowed": False, "http_status": 403},
        "controls": ["ISO27001:A.5.15", "SOC2:CC6.1"],
        "payload_commitment": entry["payload_commitment"],
    }
    for secret in (b"alice", b"chat-of-jane-42", b"token", b"sha256:"):
        assert secret not in leaf.entry


def test_controls_are_the_union_of_reasons_and_rule_labels(audit_log: AuditLog) -> None:
    denied = decision_event(controls=("SOC2:CC6.1",), rule_labels=("GDPR:Art.32", "SOC2:CC6.1"))
    allowed = decision_event(allowed=True, rule_labels=("ISO27001:A.8.3", "SOC2:CC6.3"))
    audit_log.ingest_upload(gzip_batch([denied, allowed]), "gzip")

    def controls(event: dict[str, Any]) -> list[str]:
        return list(
            orjson.loads(audit_log.leaf(decision_id=event["decision_id"]).entry)["controls"]
        )

    assert controls(denied) == ["GDPR:Art.32", "SOC2:CC6.1"]
    assert controls(allowed) == ["ISO27001:A.8.3", "SOC2:CC6.3"]


def test_the_payload_is_stored_encrypted_and_matches_the_commitment(audit_log: AuditLog) -> None:
    event = decision_event(subject="alice")
    audit_log.ingest_upload(gzip_batch([event]), "gzip")
    leaf = audit_log.leaf(decision_id=event["decision_id"])
    opened = audit_log.payload(leaf.index)

    assert opened.status is PayloadStatus.PRESENT
    assert opened.plaintext is not None and opened.salt is not None
    assert orjson.loads(opened.plaintext) == {"input": event["input"], "result": event["result"]}
    commitment = hashlib.sha256(opened.salt + opened.plaintext).hexdigest()
    assert orjson.loads(leaf.entry)["payload_commitment"] == commitment
    with audit_log.db.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT ciphertext FROM payloads").scalar_one()
    assert b"alice" not in stored and b"acme" not in stored


def test_a_subject_gets_its_own_data_key_and_the_tenant_one_for_the_rest(
    audit_log: AuditLog,
) -> None:
    batch = [
        decision_event(subject="alice"),
        decision_event(subject="alice"),
        decision_event(subject="bob"),
        decision_event(),
        decision_event(tenant="globex"),
    ]
    audit_log.ingest_upload(gzip_batch(batch), "gzip")
    with audit_log.db.engine.connect() as connection:
        keys = connection.exec_driver_sql(
            "SELECT tenant, subject FROM data_keys ORDER BY tenant, subject"
        ).all()
    assert sorted(keys, key=str) == sorted(
        [("acme", None), ("acme", "alice"), ("acme", "bob"), ("globex", None)], key=str
    )


def test_a_failed_evaluation_is_recorded_as_a_refusal_not_rejected(
    client: TestClient, audit_log: AuditLog
) -> None:
    """OPA logs a cancelled evaluation with an error and no result; Envoy refused it."""
    batch = events(3)
    del batch[1]["result"]
    batch[1]["error"] = {"code": "eval_cancel_error", "message": "caller cancelled query execution"}
    response = _post(client, gzip_batch(batch))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3
    leaf = audit_log.leaf(decision_id=batch[1]["decision_id"])
    entry = orjson.loads(leaf.entry)
    assert entry["outcome"] == {
        "allowed": False,
        "http_status": None,
        "error": "eval_cancel_error",
    }


def test_leaf_paths_keep_catalogued_tools_and_template_any_other_word() -> None:
    from nexus_audit.intake import leaf_path

    tools = frozenset({"web-search"})
    assert leaf_path("/v1/tools/web-search:invoke", tools) == "/v1/tools/web-search:invoke"
    assert leaf_path("/v1/tools/jane.doe@example.com:invoke", tools) == "/v1/tools/{id}:invoke"
    assert leaf_path("/v1/chats/web-search", tools) == "/v1/chats/{id}"
    assert leaf_path("/v1/tools/web-search%3Ainvoke?q=ssn", tools) == "/v1/tools/web-search:invoke"


@pytest.mark.parametrize(
    ("reason", "answered"),
    [("queue_timeout", True), ("deadline", False), ("cancelled", False), ("abandoned", False)],
)
def test_a_shed_check_is_a_leaf_that_says_why_and_whether_the_client_got_it(
    client: TestClient, audit_log: AuditLog, reason: str, answered: bool
) -> None:
    shed = shed_event(decision_event(), reason)
    batch = [*events(2), shed]
    response = _post(client, gzip_batch(batch))
    assert response.status_code == 200, response.text
    leaf = audit_log.leaf(decision_id=shed["decision_id"])
    entry = orjson.loads(leaf.entry)
    assert entry["outcome"] == {"allowed": False, "http_status": 503, "shed": reason}
    hit = hit_of(leaf.index, leaf.entry)
    assert (hit.shed, hit.answered) == (reason, answered)
    ordinary = audit_log.leaf(decision_id=batch[0]["decision_id"])
    assert "shed" not in orjson.loads(ordinary.entry)["outcome"]
    assert hit_of(ordinary.index, ordinary.entry).answered


def test_an_older_enforcers_shed_true_is_kept_as_unspecified(
    client: TestClient, audit_log: AuditLog
) -> None:
    shed = shed_event(decision_event(), True)
    assert _post(client, gzip_batch([shed])).status_code == 200
    entry = orjson.loads(audit_log.leaf(decision_id=shed["decision_id"]).entry)
    assert entry["outcome"]["shed"] == "unspecified"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e["result"].update(shed="overloaded"), "shed must be one of"),
        (lambda e: e["result"].update(shed=7), "result.shed"),
        (lambda e: e["result"].update(allowed=True), "a shed request cannot be allowed"),
    ],
)
def test_a_shed_mark_the_plugin_never_writes_is_refused_naming_it(
    client: TestClient, audit_log: AuditLog, change: Any, problem: str
) -> None:
    bad = shed_event(decision_event(), "queue_timeout")
    change(bad)
    message = _refused(client, audit_log, gzip_batch([*events(2), bad]), 400, "invalid_event")
    assert message.startswith(f"event 2 (decision {bad['decision_id']}): result"), message
    assert problem in message, message


def test_uploads_appended_at_once_on_sqlite_queue_for_the_lock_instead_of_failing(
    audit_log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake's conflict check reads before the append: a second upload committing in
    between made the first fail with "database is locked" (a stale SQLite snapshot)."""
    check = audit_log._check_conflicts
    second = gzip_batch(events(3))
    outcome: dict[str, Any] = {}

    def upload_second() -> None:
        try:
            outcome["second"] = audit_log.ingest_upload(second, "gzip")
        except Exception as exc:  # reported by the assertion below
            outcome["second"] = exc

    def check_while_another_upload_runs(session: Any, items: Any) -> None:
        monkeypatch.setattr(audit_log, "_check_conflicts", check)
        thread = threading.Thread(target=upload_second, daemon=True)
        thread.start()
        thread.join(0.3)
        outcome["queued"] = thread.is_alive()
        outcome["thread"] = thread
        check(session, items)

    monkeypatch.setattr(audit_log, "_check_conflicts", check_while_another_upload_runs)
    first = audit_log.ingest_upload(gzip_batch(events(2)), "gzip")
    outcome["thread"].join(10)
    assert first.accepted == 2
    assert outcome["queued"], "the second upload committed inside the first's transaction"
    assert getattr(outcome["second"], "accepted", outcome["second"]) == 3
    assert audit_log.size() == 5


def test_a_decision_stating_its_tenants_log_choice_is_taken(
    client: TestClient, audit_log: AuditLog
) -> None:
    opted_out = decision_event(allowed=True)
    opted_out["result"]["decision_log"] = {"wait_for": "none"}
    assert _post(client, gzip_batch([opted_out])).status_code == 200
    assert audit_log.leaf(decision_id=opted_out["decision_id"]) is not None
