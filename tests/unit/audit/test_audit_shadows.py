"""Shadow outcomes: the intake keeps an enforcer's shadow outcome for its own decision as a leaf
of kind shadow, skips one for a decision not in the log, and refuses one outside the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest

from nexus_audit.intake import DecisionConflictError, InvalidEventError
from nexus_audit.service import AuditLog
from nexus_audit.verify import verify_log
from nexus_contract.decision import SCHEMAS_DIR
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import decision_event, gzip_batch, receipt_event, shadow_event

NOW = datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
"""A minute before the audit log's clock (conftest)."""


def _upload(log: AuditLog, *batch: dict[str, Any]) -> int:
    return log.ingest_upload(gzip_batch(list(batch)), "gzip").accepted


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (SCHEMAS_DIR / "shadow" / "shadow.schema.json").read_text(encoding="utf-8")
    )
    return schema


def test_a_shadow_outcome_is_a_leaf_of_its_own_kind_bound_to_its_decision(
    audit_log: AuditLog,
) -> None:
    decision = decision_event(decision_id="d-1", allowed=False, time=NOW)
    outcome = shadow_event("d-1", change="deny_to_allow", tool="wire-transfer", time=NOW)
    assert _upload(audit_log, decision, outcome) == 2

    leaf = audit_log.leaf(index=1)
    entry = orjson.loads(leaf.entry)
    assert entry["kind"] == "shadow"
    assert entry["decision_id"] == "d-1"
    assert entry["change"] == "deny_to_allow"
    assert entry["candidate_revision"] == "cand-0002"
    assert entry["enforcer"] == "eu-west-1-a"
    assert entry["region"] == "eu-west-1"
    assert entry["tool"] == "wire-transfer"
    assert entry["candidate"]["allowed"] is True
    assert entry["shadow_id"] == outcome["decision_id"]

    # Sent again (the durable log ships at least once): the same leaf, not a second one.
    assert _upload(audit_log, outcome) == 0


def test_a_shadow_outcome_for_a_decision_not_in_the_log_is_skipped_and_counted(
    audit_log: AuditLog,
) -> None:
    assert _upload(audit_log, shadow_event("d-never", time=NOW)) == 0
    assert audit_log.metrics.get("shadows_skipped", "decision_not_logged") == 1
    assert audit_log.size() == 0, "no shadow leaf"


def test_a_restated_shadow_outcome_is_a_conflict(audit_log: AuditLog) -> None:
    _upload(audit_log, decision_event(decision_id="d-1", time=NOW), shadow_event("d-1", time=NOW))
    with pytest.raises(DecisionConflictError, match="already has a shadow record"):
        _upload(audit_log, shadow_event("d-1", change="error", time=NOW))


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("change", "widened", "result.change"),
        ("eval_ns", -1, "result.eval_ns"),
        ("input", {"attributes": {}}, "result.input"),
        ("active", {"allowed": True, "http_status": 200, "reasons": [], "body": "x"},
         "result.active.body"),
    ],
)  # fmt: skip
def test_a_shadow_outcome_outside_the_contract_is_refused_with_its_field(
    audit_log: AuditLog, field: str, value: Any, where: str
) -> None:
    _upload(audit_log, decision_event(decision_id="d-1", time=NOW))
    outcome = shadow_event("d-1", time=NOW)
    outcome["result"][field] = value
    with pytest.raises(InvalidEventError) as refused:
        _upload(audit_log, outcome)
    assert refused.value.field == where
    assert not jsonschema.Draft202012Validator(_schema()).is_valid(outcome["result"])


@pytest.mark.parametrize("change", ["unchanged", "deny_to_allow", "error"])
def test_the_shadow_outcomes_the_tests_send_are_the_contracts(change: str) -> None:
    outcome = shadow_event("d-1", change=change)["result"]
    jsonschema.Draft202012Validator(_schema()).validate(outcome)


def test_a_log_with_shadow_and_receipt_leaves_verifies(audit_log: AuditLog) -> None:
    decision = decision_event(decision_id="d-1", time=NOW)
    batch = [decision, shadow_event("d-1", time=NOW), receipt_event("d-1", time=NOW)]
    assert _upload(audit_log, *batch) == 3
    audit_log.checkpoint()
    assert verify_log(audit_log.db, LOG_KEY.verifier).size == 3
