"""Alertmanager's webhook acts on the control plane: only as an operator, only as it says.

Against the running stack (control plane on SQLite and on PostgreSQL, real OPA + Envoy),
with a rollout rolling (its enforcer is down, so it waits to converge): a caller without an
operator token cannot pause it by posting a forged alert; a resolved alert, an alert without
a remediation and one naming a remediation the route does not know change nothing; a payload
that is not Alertmanager's (another version, too many alerts) is refused with 400 naming the
field at fault. The rollout then completes, untouched.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nexus_cli.client import ControlPlaneClient
from nexus_control.api.alerts import MAX_ALERTS
from tests.fixtures.environment import Environment, eventually, sources_for

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

WEBHOOK = "/v1/alerts/webhook"


def _alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "NexusEnforcerDown", **labels},
        "annotations": {"summary": "forged"},
        "fingerprint": "0123456789abcdef",
    }


def _payload(*alerts: dict[str, Any], version: str = "4") -> dict[str, Any]:
    return {"version": version, "status": "firing", "receiver": "x", "alerts": list(alerts)}


def _post(env: Environment, token: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return httpx.post(env.url + WEBHOOK, json=body, headers=headers, timeout=10)


def _state(env: Environment, rollout_id: int) -> str:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        return str(api.get(f"/v1/rollouts/{rollout_id}")["state"])


def test_forged_alert_remediation_pauses_nothing(stack: Environment) -> None:
    assert stack.stack is not None
    enforcer = stack.stack.enforcers[0]
    enforcer.opa.kill()
    try:
        sources = sources_for(stack.build(**_narrower_retention(stack)))
        with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
            rollout_id = int(api.publish(sources.pack())["rollout"]["id"])
        assert _state(stack, rollout_id) == "rolling"
        pause = _payload(_alert(remediation="pause_rollout"))

        assert _post(stack, None, pause).status_code == 401
        for role in ("author", "approver", "gateway", enforcer.id):
            response = _post(stack, stack.tokens[role], pause)
            assert response.status_code == 403, (role, response.text)

        operator = stack.tokens["operator"]
        for harmless in (
            _payload(_alert("resolved", remediation="pause_rollout")),
            _payload(_alert()),
        ):
            response = _post(stack, operator, harmless)
            assert response.status_code == 200, response.text
            assert response.json() == {"remediations": []}
        unknown = _post(stack, operator, _payload(_alert(remediation="drop_database")))
        assert unknown.status_code == 200, unknown.text
        assert unknown.json()["remediations"][0]["outcome"] == "unknown"

        for malformed in (
            _payload(_alert(remediation="pause_rollout"), version="3"),
            _payload(*[_alert(remediation="pause_rollout")] * (MAX_ALERTS + 1)),
            {"version": "4", "status": "firing", "alerts": "pause everything"},
        ):
            response = _post(stack, operator, malformed)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "invalid_request"
        assert _state(stack, rollout_id) == "rolling"
    finally:
        stack.stack.restart_opa(enforcer, wait_for_bundles=False)
    eventually(lambda: _state(stack, rollout_id) == "completed", timeout_s=60)


def _narrower_retention(env: Environment) -> dict[str, str]:
    from tests.fixtures.environment import GATEWAY

    text = (GATEWAY / "retention.yaml").read_text()
    changed = text.replace(
        "  - dataClass: chat-history\n    days: 365", "  - dataClass: chat-history\n    days: 300"
    )
    assert changed != text
    return {"retention.yaml": changed}
