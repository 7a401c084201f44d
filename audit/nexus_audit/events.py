"""Events in the log: control-plane changes from its outbox, and the audit service's own acts.

Control-plane events (publish, approval, rollout step, rollback, ...) come
from the control plane's durable outbox with its row id; their event id is
``cp-<id>``, so re-delivering an outbox row adds nothing. The audit
service's own events (erasure, retention purge, evidence export) get
``audit-<uuid>``.

A payload's plain facts (ids, revisions, counts: at most
`INLINE_PAYLOAD_LIMIT` canonical bytes) are written into the entry itself and
kept forever. Free text and personal data (`PRIVATE_FIELDS`: a subject, a
reason, a comment, tool arguments) never are: they are committed to and
stored encrypted under the key of the event's tenant (and subject), so they
are erased with it; a payload too large to inline is sealed whole. Events
without a tenant seal under the `CONTROL_PLANE_TENANT` key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from nexus_audit.entry import SALT_SIZE, commitment, event_entry
from nexus_audit.storage import NewLeaf
from nexus_contract.canonical import canonical_json

__all__ = [
    "AUDIT_EVENT_PREFIX",
    "CONTROL_PLANE_EVENT_PREFIX",
    "CONTROL_PLANE_TENANT",
    "EVENT_CONTROLS",
    "INLINE_PAYLOAD_LIMIT",
    "PRIVATE_FIELDS",
    "SECURITY_EVENT_PREFIX",
    "ControlEvent",
    "PreparedEvent",
    "controls_for",
    "prepare_event",
]

INLINE_PAYLOAD_LIMIT = 4096
CONTROL_PLANE_TENANT = "_control-plane"
"""Data-key scope of control-plane payloads too large to inline (not a valid tenant id)."""
CONTROL_PLANE_EVENT_PREFIX = "cp-"
AUDIT_EVENT_PREFIX = "audit-"
SECURITY_EVENT_PREFIX = "security."
PRIVATE_FIELDS = frozenset(
    {"subject", "reason", "comment", "detail", "arguments", "message", "justification", "note"}
)
"""Payload keys whose values are free text or personal data: sealed, never inline."""

_CHANGE_MANAGEMENT = ("ISO27001:A.8.32", "SOC2:CC8.1", "PCI:6.5.1", "ISO42001:A.6.2.5")
_LOG_INTEGRITY = (
    "ISO27001:A.8.15",
    "SOC2:CC7.2",
    "PCI:10.3.2",
    "PCI:10.3.3",
    "HIPAA:164.312(c)(1)",
    "EUAIACT:Art.12",
)

EVENT_CONTROLS: Mapping[str, tuple[str, ...]] = {
    "bundle.": _CHANGE_MANAGEMENT,
    "approval.": _CHANGE_MANAGEMENT,
    "rollout.": _CHANGE_MANAGEMENT,
    "replay.": _CHANGE_MANAGEMENT,
    "shadow.": _CHANGE_MANAGEMENT,
    "enforcer.": _CHANGE_MANAGEMENT,
    "console.": ("ISO27001:A.8.5", "SOC2:CC6.1", "PCI:8.3.1", "HIPAA:164.312(d)"),
    "key.": ("ISO27001:A.8.24", "SOC2:CC6.1"),
    "access.": (
        "ISO27001:A.5.18",
        "SOC2:CC6.2",
        "SOC2:CC6.3",
        "PCI:8.2.4",
        "HIPAA:164.308(a)(4)(ii)(C)",
    ),
    "tool_approval.": (
        "ISO27001:A.8.2",
        "SOC2:CC6.3",
        "EUAIACT:Art.14",
        "HIPAA:164.308(a)(4)(ii)(B)",
        "PCI:7.2.1",
        "ISO42001:A.9.2",
    ),
    "evaluation.": ("ISO42001:A.6.2.4", "EUAIACT:Art.15", "SOC2:CC8.1"),
    "tenant.disabled": ("SOC2:A1.1",),
    "model_health.": ("SOC2:A1.2", "ISO27001:A.5.30", "ISO27001:A.8.14"),
    "spend.anomaly": ("SOC2:CC7.2", "ISO27001:A.8.16"),
    "spend.anomaly_held": ("SOC2:CC7.2", "SOC2:A1.1", "ISO27001:A.8.16"),
    "spend.anomaly_released": ("SOC2:CC7.2", "SOC2:A1.1", "ISO27001:A.8.16"),
    "gdpr.": ("GDPR:Art.17", "ISO27001:A.8.10", "SOC2:P4.3"),
    "retention.purged": ("GDPR:Art.5", "ISO27001:A.8.10", "SOC2:C1.2"),
    "evidence.exported": ("ISO27001:A.5.28", "SOC2:CC4.1", "HIPAA:164.308(a)(1)(ii)(D)"),
    "security.": ("ISO27001:A.8.16", "SOC2:CC7.2", "PCI:10.4.1", "HIPAA:164.308(a)(5)(ii)(C)"),
    "outbox.": _LOG_INTEGRITY,
    "witness.": _LOG_INTEGRITY,
}
"""Controls an event type is evidence for: an exact type, else its ``<prefix>.``."""


class ControlEvent(BaseModel):
    """One control-plane outbox row, as the control plane hands it over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: StrictInt = Field(ge=1)
    type: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
    actor: StrictStr = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    payload: dict[str, Any] = {}

    @property
    def event_id(self) -> str:
        return f"{CONTROL_PLANE_EVENT_PREFIX}{self.id}"


@dataclass(frozen=True)
class PreparedEvent:
    """An event's leaf, and the part of its payload to seal (under ``seal_scope``)."""

    leaf: NewLeaf
    payload: bytes | None
    salt: bytes | None
    seal_tenant: str = CONTROL_PLANE_TENANT
    seal_subject: str | None = None


def controls_for(event_type: str) -> tuple[str, ...]:
    exact = EVENT_CONTROLS.get(event_type)
    if exact is not None:
        return exact
    prefix = event_type.split(".", 1)[0] + "."
    return EVENT_CONTROLS.get(prefix, ())


def prepare_event(
    *,
    event_type: str,
    actor: str,
    time: datetime,
    payload: Mapping[str, Any],
    event_id: str | None = None,
    tenant: str | None = None,
) -> PreparedEvent:
    """Build an event leaf; ``event_id`` defaults to a fresh ``audit-<uuid>``.

    ``tenant``, when the event concerns one, is kept beside the leaf for
    lookups and is whose key seals the private part.
    """
    event_id = event_id or f"{AUDIT_EVENT_PREFIX}{uuid.uuid4()}"
    controls = controls_for(event_type)
    public = {k: v for k, v in payload.items() if k not in PRIVATE_FIELDS}
    private = {k: v for k, v in payload.items() if k in PRIVATE_FIELDS and v is not None}
    inline = canonical_json(public)
    if len(inline) > INLINE_PAYLOAD_LIMIT:
        public, private = {}, dict(payload)
    sealed: bytes | None = None
    salt: bytes | None = None
    digest: str | None = None
    if private:
        salt = os.urandom(SALT_SIZE)
        sealed = canonical_json(private)
        digest = commitment(salt, sealed)
    entry = event_entry(
        event_id=event_id,
        event_type=event_type,
        actor=actor,
        time=time,
        controls=controls,
        payload=public if public or digest is None else None,
        payload_commitment=digest,
    )
    leaf = NewLeaf(
        entry=entry,
        kind="event",
        time=time,
        event_id=event_id,
        tenant=tenant,
        controls=controls,
    )
    subject = private.get("subject")
    seal_subject = subject if isinstance(subject, str) and subject and tenant else None
    return PreparedEvent(leaf, sealed, salt, tenant or CONTROL_PLANE_TENANT, seal_subject)
