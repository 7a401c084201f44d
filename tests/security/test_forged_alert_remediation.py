"""Alertmanager's webhook acts on the control plane: only for its token, only as it says.

Against the running stack (control plane on SQLite and on PostgreSQL, real OPA + Envoy),
with a rollout rolling (its enforcer is down, so it waits to converge): a caller without an
operator token cannot pause it by posting a forged alert; a resolved alert, an alert without
a remediation and one naming a remediation the route does not know change nothing; a payload
that is not Alertmanager's (another version, too many alerts) is refused with 400 naming the
field at fault. The rollout then completes, untouched.

Disabling a tenant and rolling back: a forged alert (no token, another role's) does
neither; a resolved alert, one without a ``tenant`` label or naming a tenant the policy does
not know disables nobody, and label values are echoed bounded. A tenant an alert disabled
is refused by the enforcer, and no alert (resolved, ``enable_tenant``) re-enables it. The
remediator token Alertmanager holds is refused on every other route.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.alerts import MAX_ALERTS, MAX_ECHO
from tests.fixtures.environment import Environment, eventually, sources_for

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

WEBHOOK = "/v1/alerts/webhook"
REMEDIATOR = "alertmanager"
CHAT = "/v1/chat/completions"


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


def _remediator(env: Environment) -> str:
    """A remediator token, as Alertmanager holds: the webhook is all it may call."""
    assert env.plane is not None
    with env.plane.db.session() as session:
        token, _ = create_token(session, name=REMEDIATOR, role=Role.REMEDIATOR)
    return token


def _disabled(env: Environment) -> list[str]:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        overview = api.get("/v1/budgets")
    return [t["tenant"] for t in overview["tenants"] if t["state"] == "disabled"]


def _disable_events(env: Environment) -> list[dict[str, Any]]:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        events: list[dict[str, Any]] = api.get("/v1/events", event_type="tenant.disabled")["events"]
    return events


def _chat(env: Environment, key: str, tenant: str) -> httpx.Response:
    return env.call(key, tenant, "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})


def test_forged_or_resolved_alerts_disable_no_tenant_and_roll_nothing_back(
    stack: Environment,
) -> None:
    remediator = _remediator(stack)
    with ControlPlaneClient(stack.url, stack.tokens["operator"]) as api:
        latest = api.get("/v1/rollouts")["rollouts"][0]
    disable = _payload(_alert(remediation="disable_tenant", tenant="acme"))
    rollback = _payload(_alert(remediation="rollback_rollout"))
    assert stack.stack is not None
    for body in (disable, rollback):
        assert _post(stack, None, body).status_code == 401
        for role in ("author", "approver", "gateway", stack.stack.enforcers[0].id):
            response = _post(stack, stack.tokens[role], body)
            assert response.status_code == 403, (role, response.text)

    for harmless in (
        _payload(_alert("resolved", remediation="disable_tenant", tenant="acme")),
        _payload(_alert("resolved", remediation="rollback_rollout")),
    ):
        answer = _post(stack, remediator, harmless)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"remediations": []}

    long_name = "x" * 5000
    refusals = _post(
        stack,
        remediator,
        _payload(
            _alert(remediation="disable_tenant"),
            _alert(remediation="disable_tenant", tenant="nobody"),
            _alert(remediation="disable_tenant", tenant="../acme"),
            _alert(remediation="disable_tenant", tenant=long_name),
            _alert(remediation=long_name),
        ),
    )
    assert refusals.status_code == 200, refusals.text
    missing, unknown, not_an_id, too_long, unknown_remediation = refusals.json()["remediations"]
    assert missing["outcome"] == "refused" and "'tenant' label" in missing["detail"]
    assert (unknown["outcome"], unknown["tenant"]) == ("refused", "nobody")
    assert "unknown tenant 'nobody'" in unknown["detail"]
    assert not_an_id["outcome"] == "refused"
    assert too_long["outcome"] == "refused" and len(too_long["tenant"]) <= MAX_ECHO + 1
    assert unknown_remediation["outcome"] == "unknown"
    assert len(unknown_remediation["remediation"]) <= MAX_ECHO + 1

    assert _disabled(stack) == []
    assert _disable_events(stack) == []
    assert _state(stack, int(latest["id"])) == latest["state"]
    assert _chat(stack, "acme-chat", "acme").status_code == 200


def test_an_alert_cannot_re_enable_the_tenant_an_alert_disabled(stack: Environment) -> None:
    remediator = _remediator(stack)
    assert _chat(stack, "hooli-chat", "hooli").status_code == 200
    disable = _post(
        stack, remediator, _payload(_alert(remediation="disable_tenant", tenant="hooli"))
    )
    assert disable.status_code == 200, disable.text
    assert disable.json()["remediations"][0]["outcome"] == "disabled"

    def refused() -> bool:
        response = _chat(stack, "hooli-chat", "hooli")
        return response.status_code == 403 and any(
            r["rule"] == "nexus.budget.tenant_disabled" for r in response.json()["reasons"]
        )

    eventually(refused, timeout_s=30)
    # Audited like an operator's change, in the webhook token's name, and in the audit log.
    eventually(lambda: all(e["delivered_at"] for e in _disable_events(stack)), timeout_s=30)
    (event,) = _disable_events(stack)
    assert (event["actor"], event["payload"]["tenant"]) == (REMEDIATOR, "hooli")

    for token in (remediator, stack.tokens["operator"]):
        for undo in (
            _payload(_alert("resolved", remediation="disable_tenant", tenant="hooli")),
            _payload(_alert(remediation="enable_tenant", tenant="hooli")),
            _payload(_alert(remediation="resume_rollout")),
        ):
            response = _post(stack, token, undo)
            assert response.status_code == 200, response.text
            assert all(r["outcome"] == "unknown" for r in response.json()["remediations"])
    assert _disabled(stack) == ["hooli"]
    assert refused()


def test_a_leaked_remediator_token_acts_only_through_the_webhook(stack: Environment) -> None:
    remediator = _remediator(stack)
    headers = {"authorization": f"Bearer {remediator}"}
    for method, path in (
        ("POST", "/v1/rollouts/1/rollback"),
        ("POST", "/v1/rollouts/1/pause"),
        ("POST", "/v1/rollouts/1/promote"),
        ("GET", "/v1/budgets"),
        ("GET", "/v1/events"),
        ("GET", "/metrics"),
        ("GET", "/v1/fleet"),
    ):
        response = httpx.request(method, stack.url + path, headers=headers, json={}, timeout=10)
        assert response.status_code == 403, (method, path, response.text)
