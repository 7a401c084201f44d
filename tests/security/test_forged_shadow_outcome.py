"""An enforcer forges shadow outcomes for another enforcer's decisions, to make a candidate look
harmless (or harmful) on traffic it never saw. The intake refuses it (422), logs and counts the
attempt, and no shadow leaf is added; the enforcer that decided can still log its own."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from tests.security.conftest import Api
from tests.unit.audit.opa_events import decision_event, gzip_batch, shadow_event

NOW = datetime.now(UTC)
VICTIM = "eu-west-1-b"


def test_an_enforcer_cannot_forge_shadow_outcomes_for_another_enforcers_decision(
    api: Api,
) -> None:
    victims = decision_event(decision_id="d-of-b", allowed=False, time=NOW, enforcer=VICTIM)
    logged = api.upload(gzip_batch([victims]), token="region-token", enforcer=VICTIM)
    assert logged.status_code == 200, logged.text
    size = api.log.size()

    forged = api.upload(gzip_batch([shadow_event("d-of-b", time=NOW)]))
    assert forged.status_code == 422, forged.text
    assert forged.json()["error"]["code"] == "shadow_refused"
    assert VICTIM in forged.json()["error"]["message"]
    assert api.log.metrics.get("security_events", "shadow_forged") == 1
    last = orjson.loads(api.log.leaf(index=api.log.size() - 1).entry)
    assert last["type"] == "security.shadow_forged"
    assert last["payload"]["owner"] == VICTIM
    assert api.log.size() == size + 1, "only the security event was appended"

    own = decision_event(allowed=True, time=NOW)
    mixed = api.upload(gzip_batch([own, shadow_event("d-of-b", time=NOW)]))
    assert mixed.status_code == 422, "hidden beside its own decision, it is refused all the same"

    true_outcome = shadow_event("d-of-b", time=NOW, enforcer=VICTIM)
    taken = api.upload(gzip_batch([true_outcome]), token="region-token", enforcer=VICTIM)
    assert taken.status_code == 200, taken.text
    kinds = [orjson.loads(api.log.leaf(index=i).entry).get("kind") for i in range(api.log.size())]
    assert kinds.count("shadow") == 1
