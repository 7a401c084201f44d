"""Alertmanager's webhook: alerts that carry a remediation act on the control plane.

An alert rule names what should happen when it fires with a ``remediation`` label
(deploy/helm/nexus-policy/files/alerts.yml); Alertmanager posts its webhook (payload
version 4) here with an operator token. Only firing alerts act, and only remediations this
route knows: ``pause_rollout`` pauses the rollout in progress, exactly as an operator's
``POST /v1/rollouts/{id}/pause`` does, in the token's name and with the alert as the
reason, so the pause is audited like any other. Anything else is answered, not acted on.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from nexus_control.api.deps import OperatorDep, PlaneDep
from nexus_control.plane import ControlPlane

__all__ = ["PAUSE_ROLLOUT", "REMEDIATION_LABEL", "router"]

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

REMEDIATION_LABEL = "remediation"
PAUSE_ROLLOUT = "pause_rollout"
MAX_ALERTS = 1000
MAX_LABELS = 64


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook (the fields this route reads; others ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=MAX_LABELS)
    annotations: dict[str, str] = Field(default={}, max_length=MAX_LABELS)
    fingerprint: str = Field(default="", max_length=64)


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert] = Field(max_length=MAX_ALERTS)


class Remediation(BaseModel):
    alert: str
    remediation: str
    outcome: str
    rollout: int | None = None


class WebhookAnswer(BaseModel):
    remediations: list[Remediation]


@router.post("/webhook", response_model=WebhookAnswer)
async def alertmanager_webhook(
    body: AlertmanagerWebhook, plane: PlaneDep, principal: OperatorDep
) -> WebhookAnswer:
    """Act on firing alerts that carry a known remediation; report what was done."""
    done = await asyncio.to_thread(_remediate, plane, principal.name, body.alerts)
    return WebhookAnswer(remediations=done)


def _remediate(plane: ControlPlane, actor: str, alerts: list[WebhookAlert]) -> list[Remediation]:
    done: list[Remediation] = []
    for alert in alerts:
        remediation = alert.labels.get(REMEDIATION_LABEL)
        if alert.status != "firing" or remediation is None:
            continue
        name = alert.labels.get("alertname", "unnamed alert")[:200]
        if remediation != PAUSE_ROLLOUT:
            done.append(Remediation(alert=name, remediation=remediation, outcome="unknown"))
            continue
        summary = alert.annotations.get("summary", "")[:500]
        paused = plane.rollouts.pause_rolling(actor, f"alert {name}: {summary}".strip(": "))
        done.append(
            Remediation(
                alert=name,
                remediation=remediation,
                outcome="paused" if paused is not None else "no rolling rollout",
                rollout=paused,
            )
        )
    return done
