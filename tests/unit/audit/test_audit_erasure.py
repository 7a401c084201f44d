"""GDPR erasure by crypto-shredding, and retention: payloads go, every proof stays valid."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from nexus_audit.erasure import ErasureError, purge_expired, retention_from_config
from nexus_audit.payloads import PayloadStatus
from nexus_audit.service import AuditLog
from nexus_audit.verify import verify_log
from tests.unit.audit.harness import LOG_KEY, Clock, erase
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch


def _ingest(log: AuditLog, batch: list[dict[str, Any]]) -> list[int]:
    log.ingest_upload(gzip_batch(batch), "gzip")
    return [log.leaf(decision_id=event["decision_id"]).index for event in batch]


def _status(log: AuditLog, index: int) -> PayloadStatus:
    return log.payload(index).status


def _all_proofs_verify(log: AuditLog) -> None:
    log.checkpoint()
    for index in range(log.size()):
        proof = log.inclusion_proof(index=index)
        proof.verify(LOG_KEY.verifier, leaf=log.leaf(index=index).entry)
    verify_log(log.db, LOG_KEY.verifier)


def test_erasing_a_subject_makes_only_its_payloads_unreadable(audit_log: AuditLog) -> None:
    alice = _ingest(audit_log, [decision_event(subject="alice") for _ in range(3)])
    bob = _ingest(audit_log, [decision_event(subject="bob")])
    tenant = _ingest(audit_log, [decision_event()])
    other = _ingest(audit_log, [decision_event(tenant="globex", subject="alice")])

    result = erase(audit_log, tenant="acme", subject="alice", actor="dpo", reference="DSR-7")

    assert (result.scope, result.keys_destroyed, result.payloads_erased) == ("subject", 1, 3)
    assert [_status(audit_log, i) for i in alice] == [PayloadStatus.ERASED] * 3
    assert [_status(audit_log, i) for i in bob + tenant + other] == [PayloadStatus.PRESENT] * 3
    _all_proofs_verify(audit_log)


def test_the_erasure_is_itself_a_logged_event_without_the_subject(audit_log: AuditLog) -> None:
    _ingest(audit_log, [decision_event(subject="alice")])
    result = erase(audit_log, tenant="acme", subject="alice", actor="dpo", reference="DSR-7")

    leaf = audit_log.leaf(index=result.event_index)
    entry = orjson.loads(leaf.entry)
    assert (entry["kind"], entry["type"], entry["actor"]) == (
        "event",
        "gdpr.erasure",
        "second-dpo",
    )
    assert entry["payload"] == {
        "request_id": result.request_id,
        "scope": "subject",
        "tenant": "acme",
        "keys_destroyed": 1,
        "payloads_erased": 1,
        "requested_by": "dpo",
        "approved_by": "second-dpo",
    }
    assert "GDPR:Art.17" in entry["controls"]
    assert b"alice" not in leaf.entry


def test_erasing_a_tenant_destroys_its_tenant_and_subject_keys(audit_log: AuditLog) -> None:
    acme = _ingest(audit_log, [decision_event(subject="alice"), decision_event()])
    globex = _ingest(audit_log, [decision_event(tenant="globex")])

    result = erase(audit_log, tenant="acme", actor="dpo")

    assert (result.scope, result.keys_destroyed, result.payloads_erased) == ("tenant", 2, 2)
    assert [_status(audit_log, i) for i in acme] == [PayloadStatus.ERASED] * 2
    assert _status(audit_log, globex[0]) is PayloadStatus.PRESENT
    with audit_log.db.engine.connect() as connection:
        wrapped = connection.exec_driver_sql(
            "SELECT wrapped_key, destroyed_at FROM data_keys WHERE tenant = 'acme'"
        ).all()
        salts = connection.exec_driver_sql(
            "SELECT count(*) FROM payloads WHERE tenant = 'acme' "
            "AND (salt IS NOT NULL OR length(ciphertext) > 0)"
        ).scalar_one()
    assert all(key is None and destroyed is not None for key, destroyed in wrapped)
    assert salts == 0
    _all_proofs_verify(audit_log)


def test_new_decisions_after_an_erasure_get_a_fresh_key(audit_log: AuditLog) -> None:
    before = _ingest(audit_log, [decision_event(subject="alice")])
    erase(audit_log, tenant="acme", subject="alice", actor="dpo")
    after = _ingest(audit_log, [decision_event(subject="alice")])

    assert _status(audit_log, before[0]) is PayloadStatus.ERASED
    assert _status(audit_log, after[0]) is PayloadStatus.PRESENT


def test_erasing_twice_destroys_nothing_more_but_is_logged_again(audit_log: AuditLog) -> None:
    _ingest(audit_log, [decision_event(subject="alice")])
    erase(audit_log, tenant="acme", subject="alice", actor="dpo")
    size = audit_log.size()
    again = erase(audit_log, tenant="acme", subject="alice", actor="dpo")
    assert (again.keys_destroyed, again.payloads_erased) == (0, 0)
    assert audit_log.size() == size + 3  # requested, erased, compacted


def test_a_reference_too_long_to_log_or_an_empty_subject_is_refused(audit_log: AuditLog) -> None:
    with pytest.raises(ErasureError, match="reference"):
        erase(audit_log, tenant="acme", actor="dpo", reference="x" * 201)
    with pytest.raises(ErasureError, match="empty subject"):
        erase(audit_log, tenant="acme", subject="", actor="dpo")


def test_retention_purges_payloads_older_than_each_tenants_days(
    audit_log: AuditLog, clock: Clock
) -> None:
    clock.now = T0 + timedelta(days=100)
    old_acme = _ingest(audit_log, [decision_event(time=T0), decision_event(time=T0, subject="a")])
    new_acme = _ingest(audit_log, [decision_event(time=T0 + timedelta(days=95))])
    old_globex = _ingest(audit_log, [decision_event(tenant="globex", time=T0)])
    old_initech = _ingest(audit_log, [decision_event(tenant="initech", time=T0)])
    days = {"acme": 30, "globex": 400, "initech": None}

    results = purge_expired(audit_log, lambda tenant: days[tenant], actor="retention")

    assert [(r.tenant, r.days, r.payloads) for r in results] == [("acme", 30, 2)]
    assert [_status(audit_log, i) for i in old_acme] == [PayloadStatus.PURGED] * 2
    assert [_status(audit_log, i) for i in new_acme + old_globex + old_initech] == [
        PayloadStatus.PRESENT
    ] * 3
    event = orjson.loads(audit_log.leaf(index=results[0].event_index).entry)
    assert (event["type"], event["payload"]["tenant"], event["payload"]["payloads_purged"]) == (
        "retention.purged",
        "acme",
        2,
    )
    _all_proofs_verify(audit_log)


def test_retention_days_come_from_the_compiled_bundle_data() -> None:
    config = {
        "retention": {
            "*": {"audit-payloads": {"days": 400, "delete": "hard", "legal_hold": False}},
            "initech": {"audit-payloads": {"days": 2555, "delete": "hard", "legal_hold": False}},
            "globex": {
                "chat-history": {"days": 730, "delete": "soft", "legal_hold": True},
                "audit-payloads": {"days": 10, "delete": "hard", "legal_hold": True},
            },
        }
    }
    days = retention_from_config(config)
    assert (days("acme"), days("initech"), days("globex")) == (400, 2555, None)
    assert retention_from_config({})("acme") is None


def test_a_writer_stops_using_a_cached_key_once_another_writer_erased_it(
    make_log: Any, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    writer, dpo = make_log(url), make_log(url)
    _ingest(writer, [decision_event(subject="alice")])
    _ingest(writer, [decision_event(subject="alice")])  # the live key is now cached

    erase(dpo, tenant="acme", subject="alice", actor="dpo")
    after = _ingest(writer, [decision_event(subject="alice")])

    assert _status(writer, after[0]) is PayloadStatus.PRESENT
    assert [_status(writer, i) for i in range(2)] == [PayloadStatus.ERASED] * 2
