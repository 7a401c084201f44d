"""Delivery receipts: the intake takes an enforcer's receipt for its own decision, and search
reports that decision unanswered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest

from nexus_audit.intake import DecisionConflictError, InvalidEventError
from nexus_audit.search import DecisionQuery
from nexus_audit.service import AuditLog
from nexus_contract.decision import SCHEMAS_DIR
from nexus_contract.wire import RECEIPT_SHED_DELIVERED
from tests.unit.audit.opa_events import decision_event, gzip_batch, receipt_event, shed_event

NOW = datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
"""A minute before the audit log's clock (conftest)."""


def _upload(log: AuditLog, *batch: dict[str, Any]) -> int:
    return log.ingest_upload(gzip_batch(list(batch)), "gzip").accepted


def _hit(log: AuditLog, decision_id: str) -> Any:
    (hit,) = log.search_decisions(DecisionQuery(decision_id=decision_id)).hits
    return hit


def test_a_receipt_marks_its_decision_unanswered_in_search(audit_log: AuditLog) -> None:
    late = decision_event(decision_id="d-late", allowed=True, time=NOW)
    kept = decision_event(decision_id="d-kept", allowed=True, time=NOW)
    assert _upload(audit_log, late, kept, receipt_event("d-late", time=NOW)) == 3

    hit = _hit(audit_log, "d-late")
    assert hit.allowed, "the leaf still says what the policy decided"
    assert hit.receipt == "ext_authz_error"
    assert not hit.answered
    assert _hit(audit_log, "d-kept").answered
    while audit_log.index_decisions():
        pass
    page = audit_log.search_decisions(DecisionQuery())
    assert {h.decision_id: h.answered for h in page.hits} == {"d-late": False, "d-kept": True}
    assert audit_log.decision_record("d-late").hit.receipt == "ext_authz_error"

    receipt = orjson.loads(audit_log.leaf(index=2).entry)
    assert receipt["kind"] == "receipt"
    assert receipt["decision_id"] == "d-late"
    assert receipt["delivered"] is False
    assert receipt["envoy"] == {
        "response_code": 503,
        "details": "ext_authz_error",
        "flags": ["UAEX"],
    }


def test_a_delivered_receipt_corrects_a_shed_leaf_presumed_unanswered(audit_log: AuditLog) -> None:
    """The plugin's clock said Envoy had given up (deadline); Envoy's log says the client got
    the refusal: search counts it answered, and the shed leaf itself is unchanged."""
    shed = shed_event(decision_event(decision_id="d-shed", time=NOW), "deadline")
    lost = shed_event(decision_event(decision_id="d-lost", time=NOW), "deadline")
    delivered = receipt_event("d-shed", reason=RECEIPT_SHED_DELIVERED, time=NOW)
    assert _upload(audit_log, shed, lost, delivered) == 3

    hit = _hit(audit_log, "d-shed")
    assert (hit.shed, hit.receipt, hit.answered) == ("deadline", RECEIPT_SHED_DELIVERED, True)
    assert not _hit(audit_log, "d-lost").answered, "no receipt: the presumption stands"
    receipt = orjson.loads(audit_log.leaf(index=2).entry)
    assert (receipt["delivered"], receipt["reason"]) == (True, RECEIPT_SHED_DELIVERED)
    jsonschema.Draft202012Validator(_schema()).validate(delivered["result"])


def test_a_receipt_in_a_later_upload_finds_its_decision_in_the_log(audit_log: AuditLog) -> None:
    _upload(audit_log, decision_event(decision_id="d-1", time=NOW))
    receipt = receipt_event("d-1", allowed=False, reason="client_gone", time=NOW)
    assert _upload(audit_log, receipt) == 1
    assert _upload(audit_log, receipt) == 0, "a resent receipt is a duplicate"
    assert _hit(audit_log, "d-1").receipt == "client_gone"

    other = receipt_event("d-1", reason="other_answer", time=NOW)
    with pytest.raises(DecisionConflictError, match="already has a receipt"):
        _upload(audit_log, other)


def test_a_receipt_for_a_decision_not_in_the_log_is_skipped_not_kept(
    audit_log: AuditLog,
) -> None:
    """Its decision's upload was refused; refusing this one too would set aside the decisions
    beside it, and keeping it would mark a decision of that id logged later."""
    own = decision_event(time=NOW)
    assert _upload(audit_log, own, receipt_event("d-missing", time=NOW)) == 1
    assert audit_log.metrics.get("receipts_skipped", "decision_not_logged") == 1
    assert _upload(audit_log, decision_event(decision_id="d-missing", time=NOW)) == 1
    assert _hit(audit_log, "d-missing").answered
    assert audit_log.size() == 2, "no receipt leaf"


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("reason", "because", "result"),
        ("delivered", True, "result"),
        ("reason", "shed_answer_delivered", "result"),
        ("envoy", {"response_code": 503, "details": "x", "flags": ["<b>"]}, "result"),
        ("answered", {"allowed": True, "note": "free text"}, "result.answered.note"),
    ],
)
def test_a_receipt_outside_the_contract_is_refused_with_its_field(
    audit_log: AuditLog, field: str, value: Any, where: str
) -> None:
    _upload(audit_log, decision_event(decision_id="d-1", time=NOW))
    receipt = receipt_event("d-1", time=NOW)
    receipt["result"][field] = value
    with pytest.raises(InvalidEventError) as refused:
        _upload(audit_log, receipt)
    assert refused.value.field == where
    assert not jsonschema.Draft202012Validator(_schema()).is_valid(receipt["result"])


def test_the_receipt_the_tests_send_is_the_contracts() -> None:
    jsonschema.Draft202012Validator(_schema()).validate(receipt_event("d-1")["result"])


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (SCHEMAS_DIR / "receipt" / "receipt.schema.json").read_text(encoding="utf-8")
    )
    return schema


def test_a_bad_decision_after_a_receipt_is_named_by_its_place_in_the_upload(
    audit_log: AuditLog,
) -> None:
    _upload(audit_log, decision_event(decision_id="d-1", time=NOW))
    bad = decision_event(decision_id="d-bad", time=NOW)
    bad["result"]["allowed"] = "yes"
    with pytest.raises(InvalidEventError, match=r"^event 2 \(decision d-bad\)"):
        _upload(audit_log, decision_event(time=NOW), receipt_event("d-1", time=NOW), bad)
