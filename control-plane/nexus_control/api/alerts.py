"""Alertmanager's webhook: alerts that carry a remediation act on the control plane.

An alert rule names what should happen when it fires with a ``remediation`` label
(deploy/helm/nexus-policy/files/alerts.yml); Alertmanager posts its webhook (payload
version 4) here with a remediator token (a role that may do nothing else) or an operator's.
Only firing alerts act, and only remediations this route knows, each exactly as a person
would do it, in the token's name and with the alert as the reason, so it is audited like
any other change:

- ``pause_rollout`` pauses the rollout in progress (``POST /v1/rollouts/{id}/pause``);
- ``rollback_rollout`` rolls back the rollout in progress, rolling or paused
  (``POST /v1/rollouts/{id}/rollback``), unless it was opened after the alert started
  firing (a fix published meanwhile is not undone);
- ``disable_tenant`` disables the tenant the alert's ``tenant`` label names for this
  budget period, as a hard cap set to disable does; refused when the label is missing or
  the policy in force does not know the tenant.

Anything else is answered, not acted on. Nothing here re-enables a tenant or resumes a
rollout: undoing a remediation is for a person.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from nexus_control.api.deps import PlaneDep, RemediatorDep
from nexus_control.budgets.usage import UnknownTenantError
from nexus_control.plane import ControlPlane
from nexus_control.rollout.rollouts import NoPolicyInForceError

__all__ = [
    "DISABLE_TENANT",
    "PAUSE_ROLLOUT",
    "REMEDIATIONS",
    "REMEDIATION_LABEL",
    "ROLLBACK_ROLLOUT",
    "TENANT_LABEL",
    "router",
]

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

REMEDIATION_LABEL = "remediation"
TENANT_LABEL = "tenant"
PAUSE_ROLLOUT = "pause_rollout"
ROLLBACK_ROLLOUT = "rollback_rollout"
DISABLE_TENANT = "disable_tenant"
REMEDIATIONS = (PAUSE_ROLLOUT, ROLLBACK_ROLLOUT, DISABLE_TENANT)
MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_ECHO = 64
"""An alert's label value is answered back at most this long."""
_TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook (the fields this route reads; others ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=MAX_LABELS)
    annotations: dict[str, str] = Field(default={}, max_length=MAX_LABELS)
    fingerprint: str = Field(default="", max_length=64)
    starts_at: AwareDatetime | None = Field(default=None, alias="startsAt")


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert] = Field(max_length=MAX_ALERTS)


class Remediation(BaseModel):
    alert: str
    remediation: str
    outcome: str
    """paused | rolled_back | disabled | already disabled | refused | unknown | a reason
    nothing was done (no rolling rollout, no rollout in progress, newer than the alert)."""
    rollout: int | None = None
    tenant: str | None = None
    detail: str | None = None


class WebhookAnswer(BaseModel):
    remediations: list[Remediation]


@router.post("/webhook", response_model=WebhookAnswer)
async def alertmanager_webhook(
    body: AlertmanagerWebhook, plane: PlaneDep, principal: RemediatorDep
) -> WebhookAnswer:
    """Act on firing alerts that carry a known remediation; report what was done."""
    done = await asyncio.to_thread(_remediate, plane, principal.name, body.alerts)
    return WebhookAnswer(remediations=done)


def _echo(value: str) -> str:
    """A label value fit to answer back: bounded, printable."""
    printable = "".join(c if c.isprintable() else "?" for c in value[:MAX_ECHO])
    return printable + ("…" if len(value) > MAX_ECHO else "")


def _remediate(plane: ControlPlane, actor: str, alerts: list[WebhookAlert]) -> list[Remediation]:
    done: list[Remediation] = []
    for alert in alerts:
        remediation = alert.labels.get(REMEDIATION_LABEL)
        if alert.status != "firing" or remediation is None:
            continue
        name = _echo(alert.labels.get("alertname", "unnamed alert"))
        summary = alert.annotations.get("summary", "")[:500]
        reason = f"alert {name}: {summary}".strip(": ")
        if remediation == PAUSE_ROLLOUT:
            paused = plane.rollouts.pause_rolling(actor, reason)
            outcome = "paused" if paused is not None else "no rolling rollout"
            done.append(Remediation(alert=name, remediation=remediation, outcome=outcome,
                                    rollout=paused))  # fmt: skip
        elif remediation == ROLLBACK_ROLLOUT:
            done.append(_rollback(plane, actor, name, reason, alert.starts_at))
        elif remediation == DISABLE_TENANT:
            done.append(_disable(plane, actor, name, reason, alert.labels.get(TENANT_LABEL)))
        else:
            done.append(Remediation(alert=name, remediation=_echo(remediation), outcome="unknown"))
    return done


def _rollback(
    plane: ControlPlane, actor: str, name: str, reason: str, started: datetime | None
) -> Remediation:
    rollout, outcome = plane.rollouts.rollback_in_progress(actor, reason, started_by=started)
    if rollout is not None:
        return Remediation(
            alert=name, remediation=ROLLBACK_ROLLOUT, outcome=outcome, rollout=rollout.id
        )
    known = outcome in ("no rollout in progress", "newer than the alert")
    return Remediation(
        alert=name,
        remediation=ROLLBACK_ROLLOUT,
        outcome=outcome if known else "refused",
        detail=None if known else outcome,
    )


def _disable(
    plane: ControlPlane, actor: str, name: str, reason: str, tenant: str | None
) -> Remediation:
    def refused(detail: str, echoed: str | None = None) -> Remediation:
        return Remediation(
            alert=name, remediation=DISABLE_TENANT, outcome="refused", tenant=echoed, detail=detail
        )

    if not tenant:
        return refused(f"the alert has no {TENANT_LABEL!r} label naming the tenant to disable")
    if not _TENANT_ID.match(tenant):
        return refused("the tenant label is not a tenant id", _echo(tenant))
    try:
        disabled = plane.budgets.disable(tenant, actor, reason, alert=name)
    except (UnknownTenantError, NoPolicyInForceError) as exc:
        return refused(str(exc), tenant)
    outcome = "disabled" if disabled else "already disabled"
    return Remediation(alert=name, remediation=DISABLE_TENANT, outcome=outcome, tenant=tenant)
