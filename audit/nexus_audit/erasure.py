"""GDPR erasure by crypto-shredding, and the retention job that purges old payloads.

Erasing a subject (or a whole tenant) destroys the data keys its payloads
are encrypted under: the wrapped keys are overwritten and the payloads'
salts dropped, so the payloads can never be read again, while the leaves,
which carry only salted commitments, and every proof and checkpoint stay
valid. The erasure is itself appended to the log (``gdpr.erasure``), in the
same transaction as the key destruction.

A subject's own key holds the payloads of decisions whose request named it
(header ``x-nexus-subject``); requests that named no subject are under the
tenant's key and are erased with the tenant. The erasure event names the
tenant and the scope, never the subject: the leaf is kept forever.

Retention deletes a tenant's payloads older than its audit retention
(`retention_days(tenant)` days, None keeps them), one ``retention.purged``
event per tenant that lost any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_audit import storage
from nexus_audit.entry import format_time
from nexus_audit.events import CONTROL_PLANE_TENANT, prepare_event
from nexus_audit.payloads import MAX_SUBJECT_LENGTH, MAX_TENANT_LENGTH, scope_name
from nexus_audit.service import AuditLog

__all__ = [
    "AUDIT_PAYLOADS_DATA_CLASS",
    "ERASURE_EVENT",
    "MAX_REFERENCE_LENGTH",
    "RETENTION_EVENT",
    "ErasureResult",
    "PurgeResult",
    "erase",
    "purge_expired",
    "retention_from_config",
]

ERASURE_EVENT = "gdpr.erasure"
RETENTION_EVENT = "retention.purged"
AUDIT_PAYLOADS_DATA_CLASS = "audit-payloads"
"""The retention data class (bundles' retention.yaml) that governs decision payloads."""
MAX_REFERENCE_LENGTH = 200


@dataclass(frozen=True)
class ErasureResult:
    tenant: str
    scope: str
    """'subject' or 'tenant'."""
    keys_destroyed: int
    payloads_erased: int
    event_id: str
    event_index: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "scope": self.scope,
            "keys_destroyed": self.keys_destroyed,
            "payloads_erased": self.payloads_erased,
            "event_id": self.event_id,
            "event_index": self.event_index,
        }


@dataclass(frozen=True)
class PurgeResult:
    tenant: str
    days: int
    before: datetime
    payloads: int
    event_index: int


def erase(
    log: AuditLog,
    *,
    tenant: str,
    subject: str | None = None,
    actor: str,
    reference: str | None = None,
) -> ErasureResult:
    """Crypto-shred a subject's payloads (or, with no subject, the whole tenant's).

    ``reference`` (a ticket or request id) goes into the logged event, so it
    must not carry personal data. Idempotent in effect: erasing again destroys
    nothing more, and is logged again.
    """
    if not tenant:
        raise ValueError("erasure needs a tenant")
    if reference is not None and len(reference) > MAX_REFERENCE_LENGTH:
        raise ValueError(f"the reference is longer than {MAX_REFERENCE_LENGTH} characters")
    stored_tenant = scope_name(tenant, MAX_TENANT_LENGTH)
    if subject is not None and not subject:
        raise ValueError("an empty subject names no one; omit it to erase the whole tenant")
    stored_subject = None if subject is None else scope_name(subject, MAX_SUBJECT_LENGTH)
    scope = "tenant" if stored_subject is None else "subject"
    now = log.now()
    with log.db.session() as session:
        storage.lock_sequencer(session)
        key_ids, erased = log.vault.destroy_keys(session, stored_tenant, stored_subject, now=now)
        payload: dict[str, Any] = {
            "scope": scope,
            "tenant": stored_tenant,
            "keys_destroyed": len(key_ids),
            "payloads_erased": erased,
        }
        if reference:
            payload["reference"] = reference
        event = prepare_event(
            event_type=ERASURE_EVENT, actor=actor, time=now, payload=payload, tenant=stored_tenant
        )
        appended = log.append_in(session, [event])
    log.after_append(appended.size)
    index = appended.indexes[0]
    assert index is not None
    assert event.leaf.event_id is not None
    return ErasureResult(stored_tenant, scope, len(key_ids), erased, event.leaf.event_id, index)


def purge_expired(
    log: AuditLog,
    retention_days: Callable[[str], int | None],
    *,
    actor: str = "retention",
    now: datetime | None = None,
) -> list[PurgeResult]:
    """Delete every tenant's payloads older than its retention; log one event per tenant.

    Control-plane payloads (`CONTROL_PLANE_TENANT`) are change records and are kept.
    """
    now = now or log.now()
    with log.db.session() as session:
        tenants = [t for t in log.vault.tenants(session) if t != CONTROL_PLANE_TENANT]
    results = []
    for tenant in tenants:
        days = retention_days(tenant)
        if days is None:
            continue
        before = now - timedelta(days=days)
        with log.db.session() as session:
            storage.lock_sequencer(session)
            purged = log.vault.purge(session, tenant, before)
            if not purged:
                continue
            event = prepare_event(
                event_type=RETENTION_EVENT,
                actor=actor,
                time=now,
                payload={
                    "tenant": tenant,
                    "days": days,
                    "before": format_time(before),
                    "payloads_purged": purged,
                },
                tenant=tenant,
            )
            appended = log.append_in(session, [event])
        log.after_append(appended.size)
        index = appended.indexes[0]
        assert index is not None
        results.append(PurgeResult(tenant, days, before, purged, index))
    return results


def retention_from_config(config: Mapping[str, Any]) -> Callable[[str], int | None]:
    """Audit-payload retention per tenant from a compiled ``data.nexus.config``.

    ``config["retention"][tenant]["audit-payloads"]`` wins over the ``"*"``
    default; a legal hold, or no rule at all, keeps payloads (None).
    """
    retention = config.get("retention")
    rules: Mapping[str, Any] = retention if isinstance(retention, Mapping) else {}

    def days(tenant: str) -> int | None:
        for scope in (tenant, "*"):
            classes = rules.get(scope)
            rule = classes.get(AUDIT_PAYLOADS_DATA_CLASS) if isinstance(classes, Mapping) else None
            if isinstance(rule, Mapping):
                if rule.get("legal_hold"):
                    return None
                value = rule.get("days")
                return value if isinstance(value, int) and value >= 0 else None
        return None

    return days
