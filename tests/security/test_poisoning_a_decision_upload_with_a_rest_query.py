"""Attack: slip an event the intake refuses into an enforcer's upload, to lose the gateway
decisions that share its chunk.

Anyone who may query the enforcer's OPA over its REST API (an operator debugging, or an
insider with the API token) makes a decision-log event of every query: ``GET
/v1/data/nexus_state/...`` is logged with a bare number as its result, which the intake
refuses (400) as no gateway decision. The durable log used to set the whole chunk aside
on a content refusal, so every gateway decision uploaded with the query was never a leaf
(the demo lost 17 that way). Now a refused chunk is halved until the refused event is
alone: it alone is kept aside (and counted), every gateway decision is recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from nexus_audit.service import AuditLog
from tests.fixtures.durable_stack import logged_ids
from tests.fixtures.gateway_opa import put_empty_state
from tests.fixtures.gateway_stack import GatewayStack

pytestmark = [pytest.mark.opa]

REQUESTS = 12
LAND_TIMEOUT_S = 30.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_rest_query_logged_among_decisions_costs_no_decision_its_leaf(
    durable_stack: GatewayStack, audit: AuditLog, tmp_path: Path
) -> None:
    opa = durable_stack.opa
    put_empty_state(opa.url)
    answered: list[str] = []
    with httpx.Client(base_url=opa.url, timeout=10) as rest:
        for n in range(REQUESTS):
            chat = {"x-nexus-tenant": "acme", **durable_stack.record_headers("c-1001")}
            answer = durable_stack.send("GET", "/v1/chats/c-1001", key="acme-chat", headers=chat)
            assert answer.decision_id
            answered.append(answer.decision_id)
            if n % 4 == 1:
                # A data query between decisions: logged by OPA, refused by the intake.
                assert rest.get("/v1/data/nexus_state/period").status_code == 200

    started = time.monotonic()
    while not set(answered) <= set(logged_ids(audit)):
        if time.monotonic() - started > LAND_TIMEOUT_S:
            break
        time.sleep(0.25)
    lost = set(answered) - set(logged_ids(audit))
    assert not lost, f"{len(lost)} of {len(answered)} gateway decisions lost to the query"
    refused = sorted((tmp_path / "decision-log" / "refused").glob("*.json"))
    kept = [path.read_text() for path in refused]
    assert kept, "the refused query events are kept aside, not dropped"
    assert not any(decision in text for text in kept for decision in answered)
