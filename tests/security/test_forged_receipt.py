"""An enforcer forges a delivery receipt for another enforcer's decision, to have the trail say
a decision that reached its client never did. The intake refuses it (422), logs and counts the
attempt, and the decision stays answered; the enforcer that made it can still give one."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from nexus_audit.search import DecisionQuery
from tests.security.conftest import Api
from tests.unit.audit.opa_events import decision_event, gzip_batch, receipt_event

NOW = datetime.now(UTC)
VICTIM = "eu-west-1-b"


def _answered(api: Api, decision_id: str) -> bool:
    (hit,) = api.log.search_decisions(DecisionQuery(decision_id=decision_id)).hits
    return hit.answered


def test_an_enforcer_cannot_forge_a_receipt_for_another_enforcers_decision(api: Api) -> None:
    victims = decision_event(decision_id="d-of-b", allowed=True, time=NOW, enforcer=VICTIM)
    logged = api.upload(gzip_batch([victims]), token="region-token", enforcer=VICTIM)
    assert logged.status_code == 200, logged.text

    # eu-west-1-a, with its own credential, header and labels, names b's decision.
    forged = api.upload(gzip_batch([receipt_event("d-of-b", time=NOW)]))
    assert forged.status_code == 422, forged.text
    assert forged.json()["error"]["code"] == "receipt_refused"
    assert "eu-west-1-b" in forged.json()["error"]["message"]
    assert _answered(api, "d-of-b"), "the forged receipt marked the decision unanswered"
    assert api.log.metrics.get("security_events", "receipt_forged") == 1
    assert api.log.metrics.get("uploads_refused", "receipt_refused") == 1
    last = orjson.loads(api.log.leaf(index=api.log.size() - 1).entry)
    assert last["type"] == "security.receipt_forged"
    assert last["payload"]["owner"] == VICTIM

    # Hidden in a batch with one of its own decisions, it is refused all the same.
    own = decision_event(allowed=True, time=NOW)
    mixed = api.upload(gzip_batch([own, receipt_event("d-of-b", time=NOW)]))
    assert mixed.status_code == 422
    assert api.log.metrics.get("security_events", "receipt_forged") == 2

    # The enforcer that decided gives its receipt; it is taken.
    true_receipt = receipt_event("d-of-b", time=NOW, enforcer=VICTIM)
    taken = api.upload(gzip_batch([true_receipt]), token="region-token", enforcer=VICTIM)
    assert taken.status_code == 200, taken.text
    assert not _answered(api, "d-of-b")
