"""Attacks 4, 6 and 8: forged, backdated and restated decisions, PII in leaves, amplification."""

from __future__ import annotations

import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from nexus_audit.events import ControlEvent
from nexus_audit.intake import (
    BatchTooLargeError,
    EnforcerMismatchError,
    IntakeRules,
    InvalidEventError,
    TimeSkewAction,
    Uploader,
)
from nexus_audit.service import AuditLog
from nexus_audit.uploads import UploadGate
from tests.security.conftest import Api, AuditFactory
from tests.unit.audit.audit_app import bearer
from tests.unit.audit.harness import erase
from tests.unit.audit.opa_events import decision_event, events, gzip_batch

NOW = datetime.now(UTC)


def _entry(log: AuditLog, decision_id: str) -> dict[str, object]:
    document: dict[str, object] = orjson.loads(log.leaf(decision_id=decision_id).entry)
    return document


def _last_event(log: AuditLog) -> dict[str, object]:
    document: dict[str, object] = orjson.loads(log.leaf(index=log.size() - 1).entry)
    return document


def test_an_enforcer_cannot_log_decisions_as_another_enforcer(api: Api) -> None:
    other_header = api.upload(gzip_batch(events(1, start=NOW)), enforcer="eu-west-9")
    assert other_header.status_code == 403, other_header.text
    other_labels = api.upload(gzip_batch(events(1, start=NOW, enforcer="eu-west-9")))
    assert other_labels.status_code == 403
    region_token = api.upload(
        gzip_batch(events(1, start=NOW, enforcer="eu-west-1-b")), token="region-token"
    )
    assert region_token.status_code == 403, "header eu-west-1-a, labels eu-west-1-b"
    no_header = httpx.post(
        api.url + "/v1/opa/logs", content=gzip_batch(events(1)), headers=bearer("enforcer-token")
    )
    assert no_header.status_code == 400
    assert api.log.metrics.get("security_events", "enforcer_mismatch") == 3
    assert _last_event(api.log)["type"] == "security.enforcer_mismatch"
    assert all(
        orjson.loads(api.log.leaf(index=i).entry)["kind"] == "event" for i in range(api.log.size())
    ), "no decision was logged"


def test_region_wide_tokens_are_refused_when_every_enforcer_has_its_own(
    open_audit: AuditFactory,
) -> None:
    log = open_audit(rules=IntakeRules(require_bound_credentials=True))
    with pytest.raises(EnforcerMismatchError, match="region-wide"):
        log.ingest_upload(
            gzip_batch(events(1, start=NOW)), "gzip", Uploader("eu-west-1", None, "eu-west-1-a")
        )
    accepted = log.ingest_upload(
        gzip_batch(events(1, start=NOW)),
        "gzip",
        Uploader("eu-west-1", "eu-west-1-a", "eu-west-1-a"),
    )
    assert accepted.accepted == 1


@pytest.mark.parametrize("claimed", ["2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z"])
def test_backdated_and_future_decisions_are_stored_with_the_receive_time_and_flagged(
    open_audit: AuditFactory, claimed: str
) -> None:
    log = open_audit(rules=IntakeRules())
    event = decision_event()
    event["timestamp"] = claimed
    result = log.ingest_upload(gzip_batch([event]), "gzip")
    assert result.flagged == 1
    entry = _entry(log, event["decision_id"])
    assert entry["claimed_time"] == claimed.replace("Z", ".000000Z")
    assert entry["flags"] == ["time_outside_window"]
    stored = datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    assert abs((stored - datetime.now(UTC)).total_seconds()) < 3600
    assert log.metrics.get("decisions_flagged", "time_outside_window") == 1


def test_out_of_window_decisions_are_refused_when_the_log_is_told_to(api: Api) -> None:
    api.log.rules = IntakeRules(time_skew=TimeSkewAction.REFUSE)
    event = decision_event()
    event["timestamp"] = "2001-01-01T00:00:00Z"
    refused = api.upload(gzip_batch([event]))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "time_outside_window"
    assert api.log.size() == 0


def test_a_restated_decision_id_is_refused_with_409_and_a_security_event(api: Api) -> None:
    original = decision_event(allowed=False, time=NOW)
    assert api.upload(gzip_batch([original])).status_code == 200
    assert api.upload(gzip_batch([original])).json()["duplicates"] == 1, "a retry is fine"
    restated = json.loads(json.dumps(original))
    restated["result"]["allowed"] = True
    restated["result"]["http_status"] = 200
    refused = api.upload(gzip_batch([restated]))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "decision_conflict"
    assert _entry(api.log, original["decision_id"])["outcome"] == {
        "allowed": False,
        "http_status": 403,
    }
    security = _last_event(api.log)
    assert security["type"] == "security.decision_conflict"
    assert security["payload"]["decision_id"] == original["decision_id"]  # type: ignore[index]
    assert api.log.metrics.get("security_events", "decision_conflict") == 1
    twice = api.upload(
        gzip_batch([decision_event(decision_id="d-1"), restated | {"decision_id": "d-1"}])
    )
    assert twice.status_code == 409, "one batch naming one id twice with other content"


def test_client_controlled_tenant_and_path_never_reach_a_leaf(api: Api) -> None:
    jane = decision_event(
        tenant="Jane Doe <jane@example.com>",
        path="/v1/users/jane.doe@example.com/ssn/078-05-1120?x=1",
        time=NOW,
    )
    encoded = decision_event(path="/v1/chats%2Fchat-of-jane-4711", time=NOW)
    assert api.upload(gzip_batch([jane, encoded])).status_code == 200
    leaf = api.log.leaf(decision_id=jane["decision_id"]).entry
    entry = orjson.loads(leaf)
    assert entry["tenant"] == "unknown" and len(entry["tenant_hash"]) == 32
    assert entry["http_path"] == "/v1/{id}/{id}/{id}/{id}"
    assert b"jane" not in leaf.lower() and b"078-05" not in leaf
    other = orjson.loads(api.log.leaf(decision_id=encoded["decision_id"]).entry)
    assert other["http_path"] == "/v1/chats/{id}"
    assert b"jane" not in api.log.leaf(decision_id=encoded["decision_id"]).entry
    payload = api.log.payload(api.log.leaf(decision_id=jane["decision_id"]).index)
    assert payload.plaintext is not None and b"078-05-1120" in payload.plaintext, "kept, sealed"


def test_free_text_of_a_tool_approval_is_sealed_and_erased_with_its_subject(
    open_audit: AuditFactory,
) -> None:
    log = open_audit()
    log.append_events(
        [
            ControlEvent(
                id=1,
                type="tool_approval.issued",
                actor="approver@nexus.example",
                created_at=NOW,
                payload={
                    "tenant": "acme",
                    "tool": "wire-transfer",
                    "subject": "jane.doe@example.com",
                    "reason": "Jane asked to move her savings",
                },
            )
        ]
    )
    leaf = log.leaf(index=0).entry
    assert b"jane" not in leaf.lower() and b"savings" not in leaf
    entry = orjson.loads(leaf)
    assert entry["payload"] == {"tenant": "acme", "tool": "wire-transfer"}
    assert "payload_commitment" in entry
    assert b"savings" in (log.payload(0).plaintext or b"")
    erase(log, tenant="acme", subject="jane.doe@example.com")
    assert log.payload(0).status == "erased"


@pytest.fixture
def small_limits(open_audit: AuditFactory) -> AuditLog:
    return open_audit(max_events=1000, max_bytes=1024 * 1024)


def _bomb(items: int) -> bytes:
    """A small gzip that inflates to ``items`` minimal events."""
    one = json.dumps(decision_event(time=NOW)).encode()
    raw = b"[" + b",".join([one] * items) + b"]"
    return gzip.compress(raw, compresslevel=9)


def test_a_gzip_bomb_is_refused_at_the_event_limit_in_bounded_memory(
    small_limits: AuditLog,
) -> None:
    tiny = gzip.compress(b"[" + b"{}," * 11_000_000 + b"{}]", compresslevel=9)
    assert len(tiny) < 64 * 1024
    many = _bomb(5000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidEventError):
            small_limits.ingest_upload(tiny, "gzip")
        with pytest.raises(BatchTooLargeError, match="more than 1000 events"):
            small_limits.ingest_upload(many, "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB while refusing"
    assert small_limits.size() == 0


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(json.dumps(events(1)).encode()) + gzip.compress(b"[]"),
        gzip.compress(json.dumps(events(1)).encode()) + b"junk",
        gzip.compress(json.dumps(events(1)).encode() + b" []"),
    ],
    ids=["second member", "trailing bytes", "bytes after the array"],
)
def test_a_second_gzip_member_or_trailing_bytes_are_refused(api: Api, body: bytes) -> None:
    refused = api.upload(body)
    assert refused.status_code == 400, refused.text
    assert api.log.size() == 0


@pytest.fixture
def tight_api(api: Api) -> Api:
    api.log.uploads = UploadGate(total=2, per_enforcer=1, retry_after_s=3)
    return api


def test_concurrent_uploads_beyond_the_cap_get_429_with_retry_after(tight_api: Api) -> None:
    api = tight_api
    release = threading.Event()
    body = gzip_batch(events(2, start=NOW))

    def slow() -> Iterator[bytes]:
        yield body[:10]
        release.wait(30)
        yield body[10:]

    answers: list[httpx.Response] = []
    held = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                api.url + "/v1/opa/logs",
                content=slow(),
                headers={
                    **bearer("enforcer-token"),
                    "content-encoding": "gzip",
                    "x-nexus-enforcer": "eu-west-1-a",
                },
                timeout=60,
            )
        )
    )
    held.start()
    try:
        deadline = time.monotonic() + 30
        while api.log.uploads.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert api.log.uploads.in_flight == 1
        busy = api.upload(body)
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "3"
        assert api.log.metrics.get("uploads_refused", "busy") == 1
    finally:
        release.set()
        held.join(60)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else None
    assert api.upload(body).json()["duplicates"] == 2, "admitted again once the first is done"
