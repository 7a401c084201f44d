"""The console's decision pages say "unanswered (receipt)" for a decision whose delivery
receipt says the client did not get it, from the audit log's own search and record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from nexus_audit.catalog import load_catalogs
from nexus_audit.search import DecisionQuery
from nexus_contract.wire import RECEIPT_SHED_DELIVERED
from nexus_control.console.routes import templates
from tests.unit.audit.harness import open_log
from tests.unit.audit.opa_events import decision_event, gzip_batch, receipt_event, shed_event

NOW = datetime.now(UTC)


def test_the_console_marks_a_receipted_decision_unanswered(tmp_path: Path) -> None:
    log = open_log(f"sqlite:///{tmp_path}/audit.db", load_catalogs(), lambda: datetime.now(UTC))
    try:
        batch = [
            decision_event(decision_id="d-late", allowed=True, time=NOW),
            decision_event(decision_id="d-kept", allowed=True, time=NOW),
            receipt_event("d-late", time=NOW),
            shed_event(decision_event(decision_id="d-shed", time=NOW), "deadline"),
            receipt_event("d-shed", reason=RECEIPT_SHED_DELIVERED, time=NOW),
        ]
        log.ingest_upload(gzip_batch(batch), "gzip")
        while log.index_decisions():
            pass
        page = log.search_decisions(DecisionQuery())
        listing = templates.env.get_template("decisions.html").render(
            page=page, params={}, rules=(), prefix="/console"
        )
        rows = {
            hit.decision_id: row
            for hit, row in zip(page.hits, listing.split("<tr>")[2:], strict=True)
        }
        assert "unanswered (receipt)" in rows["d-late"]
        assert "unanswered" not in rows["d-kept"]
        assert "answered (receipt)" in rows["d-shed"] and "unanswered" not in rows["d-shed"]

        detail = templates.env.get_template("decision.html").render(
            record=log.decision_record("d-late"),
            proof_result=(True, "ok"),
            revisions=[],
            entry_text="",
            prefix="/console",
        )
        assert 'id="receipt"' in detail
        assert "ext_authz_error" in detail
    finally:
        log.close()
