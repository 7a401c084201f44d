"""GDPR erasure by crypto-shredding, as a two-person act, and the retention job.

Erasing a subject (or a whole tenant) destroys the data keys its payloads
are encrypted under and deletes the payloads' ciphertexts and salts (the rows
stay as tombstones, so evidence can say *erased* rather than *purged*), then
compacts the database (`AuditDatabase.compact`) so neither the wrapped keys
nor the ciphertexts survive in free pages, the WAL or dead tuples. The
leaves, which carry only salted commitments, and every proof and checkpoint
stay valid.

It takes two people (`request_erasure`, then `approve_erasure` by another
principal), and it is refused while the policy in force holds any data class
of the tenant (`LegalHoldError`, 409) and for scopes that are not a tenant's
(`ReservedScopeError`, 422: the control plane's own records, the unknown-tenant
marker). Every step is a leaf: ``gdpr.erasure_requested``,
``gdpr.erasure_refused``, ``gdpr.erasure`` (the keys destroyed, by whom) and
``gdpr.erasure_compacted``. No leaf names the subject.

A subject's own key holds the payloads of decisions whose request named it
(header ``x-nexus-subject``); requests that named no subject are under the
tenant's key and are erased with the tenant.

Retention deletes a tenant's payloads older than its audit retention
(`retention_days(tenant)` days, None keeps them), one ``retention.purged``
event per tenant that lost any.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update

from nexus_audit import storage
from nexus_audit.database import CompactionError
from nexus_audit.entry import format_time
from nexus_audit.events import CONTROL_PLANE_TENANT, prepare_event
from nexus_audit.intake import UNKNOWN_TENANT
from nexus_audit.payloads import MAX_SUBJECT_LENGTH, MAX_TENANT_LENGTH, scope_name
from nexus_audit.service import AuditLog
from nexus_audit.tables import ErasureRequest, Leaf
from nexus_contract.errors import NexusError

__all__ = [
    "AUDIT_PAYLOADS_DATA_CLASS",
    "ERASURE_EVENT",
    "MAX_REFERENCE_LENGTH",
    "RETENTION_EVENT",
    "ErasureError",
    "ErasureNotFoundError",
    "ErasureRequestView",
    "ErasureResult",
    "ErasureState",
    "LegalHoldError",
    "PurgeResult",
    "ReservedScopeError",
    "SamePersonError",
    "approve_erasure",
    "erasure_requests",
    "purge_expired",
    "request_erasure",
    "retention_from_config",
]

log = logging.getLogger("nexus.audit")

ERASURE_EVENT = "gdpr.erasure"
REQUESTED_EVENT = "gdpr.erasure_requested"
REFUSED_EVENT = "gdpr.erasure_refused"
COMPACTED_EVENT = "gdpr.erasure_compacted"
RETENTION_EVENT = "retention.purged"
AUDIT_PAYLOADS_DATA_CLASS = "audit-payloads"
"""The retention data class (bundles' retention.yaml) that governs decision payloads."""
MAX_REFERENCE_LENGTH = 200
_COMPACTED_TABLES = ("data_keys", "payloads", "erasure_requests")


class ErasureError(NexusError):
    """An erasure cannot be requested or approved as asked."""


class ReservedScopeError(ErasureError):
    """The scope is not a tenant's data (the control plane's records, unknown tenants)."""


class LegalHoldError(ErasureError):
    """The tenant has data under legal hold in the policy in force."""


class SamePersonError(ErasureError):
    """The approver is the requester: erasure takes two people."""


class ErasureNotFoundError(ErasureError):
    """No pending erasure request has that id."""


class ErasureState(StrEnum):
    PENDING = "pending"
    EXECUTED = "executed"
    REFUSED = "refused"


@dataclass(frozen=True)
class ErasureRequestView:
    id: str
    tenant: str
    scope: str
    state: str
    requested_by: str
    requested_at: datetime
    reference: str | None
    decided_by: str | None = None
    event_index: int | None = None


@dataclass(frozen=True)
class ErasureResult:
    request_id: str
    tenant: str
    scope: str
    """'subject' or 'tenant'."""
    keys_destroyed: int
    payloads_erased: int
    requested_by: str
    approved_by: str
    event_id: str
    event_index: int
    compacted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "scope": self.scope,
            "keys_destroyed": self.keys_destroyed,
            "payloads_erased": self.payloads_erased,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "event_id": self.event_id,
            "event_index": self.event_index,
            "compacted": self.compacted,
        }


@dataclass(frozen=True)
class PurgeResult:
    tenant: str
    days: int
    before: datetime
    payloads: int
    event_index: int


def _check_scope(tenant: str) -> None:
    if not tenant:
        raise ReservedScopeError("erasure needs a tenant")
    if (
        tenant.startswith("_")
        or tenant in ("*", UNKNOWN_TENANT, CONTROL_PLANE_TENANT)
        or tenant.startswith(f"{UNKNOWN_TENANT}:")
    ):
        raise ReservedScopeError(
            f"{tenant!r} is not a tenant's data: the control plane's records and the "
            "unknown-tenant marker cannot be erased"
        )


def _log_step(
    log_: AuditLog, event_type: str, actor: str, payload: dict[str, Any], tenant: str
) -> int:
    event = prepare_event(
        event_type=event_type, actor=actor, time=log_.now(), payload=payload, tenant=tenant
    )
    with log_.db.session() as session:
        storage.lock_sequencer(session)
        appended = log_.append_in(session, [event])
    log_.after_append(appended.size)
    index = appended.indexes[0]
    assert index is not None
    return index


def _refuse_if_held(log_: AuditLog, tenant: str, actor: str, request_id: str | None) -> None:
    held = log_.facts.legal_holds(tenant)
    if not held:
        return
    _log_step(
        log_,
        REFUSED_EVENT,
        actor,
        {"tenant": tenant, "request_id": request_id, "why": "legal_hold", "held": list(held)},
        tenant,
    )
    raise LegalHoldError(
        f"tenant {tenant!r} has data under legal hold ({', '.join(held)}) in the policy in "
        "force: lift the hold in retention.yaml and publish before erasing"
    )


def request_erasure(
    log_: AuditLog,
    *,
    tenant: str,
    subject: str | None = None,
    requested_by: str,
    requester_id: str | None = None,
    reference: str | None = None,
) -> ErasureRequestView:
    """Record a request to erase a subject (or, with no subject, a tenant); logged, not run."""
    _check_scope(tenant)
    if subject is not None and not subject:
        raise ErasureError("an empty subject names no one; omit it to erase the whole tenant")
    if reference is not None and len(reference) > MAX_REFERENCE_LENGTH:
        raise ErasureError(f"the reference is longer than {MAX_REFERENCE_LENGTH} characters")
    stored_tenant = scope_name(tenant, MAX_TENANT_LENGTH)
    stored_subject = None if subject is None else scope_name(subject, MAX_SUBJECT_LENGTH)
    scope = "tenant" if stored_subject is None else "subject"
    _refuse_if_held(log_, stored_tenant, requested_by, None)
    request_id = str(uuid.uuid4())
    now = log_.now()
    with log_.db.session() as session:
        session.add(
            ErasureRequest(
                id=request_id,
                tenant=stored_tenant,
                subject=stored_subject,
                scope=scope,
                reference=reference,
                state=ErasureState.PENDING.value,
                requested_by=requested_by,
                requester_id=requester_id,
                requested_at=now.astimezone(UTC),
            )
        )
    payload: dict[str, Any] = {"request_id": request_id, "tenant": stored_tenant, "scope": scope}
    if reference:
        payload["reference"] = reference
    index = _log_step(log_, REQUESTED_EVENT, requested_by, payload, stored_tenant)
    return ErasureRequestView(
        request_id, stored_tenant, scope, ErasureState.PENDING.value, requested_by, now,
        reference, None, index,
    )  # fmt: skip


def erasure_requests(log_: AuditLog, *, state: str | None = None) -> list[ErasureRequestView]:
    with log_.db.session() as session:
        query = select(ErasureRequest).order_by(ErasureRequest.requested_at)
        if state is not None:
            query = query.where(ErasureRequest.state == state)
        return [
            ErasureRequestView(
                row.id,
                row.tenant,
                row.scope,
                row.state,
                row.requested_by,
                storage.as_utc(row.requested_at),
                row.reference,
                row.decided_by,
            )
            for row in session.scalars(query)
        ]


def approve_erasure(
    log_: AuditLog,
    request_id: str,
    *,
    approved_by: str,
    approver_id: str | None = None,
) -> ErasureResult:
    """Run a pending erasure as a second person: destroy the keys, delete, compact; all logged.

    ``approver_id`` is the approving principal's id when the host has one; it
    is compared with the requester's (and names are compared too: two tokens
    of one name are one person).
    """
    with log_.db.session() as session:
        row = session.get(ErasureRequest, request_id)
        if row is None or row.state != ErasureState.PENDING.value:
            raise ErasureNotFoundError(f"no pending erasure request {request_id}")
        tenant, subject, scope = row.tenant, row.subject, row.scope
        requested_by = row.requested_by
        requester_id = row.requester_id
    if approved_by == requested_by or (
        approver_id is not None and requester_id is not None and approver_id == requester_id
    ):
        raise SamePersonError(
            f"{approved_by} requested this erasure; a second person must approve it"
        )
    _refuse_if_held(log_, tenant, approved_by, request_id)
    now = log_.now()
    with log_.db.session() as session:
        storage.lock_sequencer(session)
        row = session.get(ErasureRequest, request_id)
        if row is None or row.state != ErasureState.PENDING.value:
            raise ErasureNotFoundError(f"erasure request {request_id} was decided meanwhile")
        key_ids, erased = log_.vault.destroy_keys(session, tenant, subject, now=now)
        if subject is None:
            session.execute(
                update(Leaf)
                .where(Leaf.tenant == tenant, Leaf.content_mac.is_not(None))
                .values(content_mac=None)
            )
        event = prepare_event(
            event_type=ERASURE_EVENT,
            actor=approved_by,
            time=now,
            payload={
                "request_id": request_id,
                "scope": scope,
                "tenant": tenant,
                "keys_destroyed": len(key_ids),
                "payloads_erased": erased,
                "requested_by": requested_by,
                "approved_by": approved_by,
            },
            tenant=tenant,
        )
        appended = log_.append_in(session, [event])
        row.state = ErasureState.EXECUTED.value
        row.subject = None
        row.decided_by = approved_by
        row.decided_at = now.astimezone(UTC)
        row.keys_destroyed = len(key_ids)
        row.payloads_erased = erased
    log_.after_append(appended.size)
    index = appended.indexes[0]
    assert index is not None
    assert event.leaf.event_id is not None
    compacted = True
    try:
        log_.db.compact(_COMPACTED_TABLES)
    except CompactionError:
        compacted = False
        log.exception("erasure committed, compaction incomplete", extra={"request": request_id})
    _log_step(
        log_,
        COMPACTED_EVENT,
        approved_by,
        {"request_id": request_id, "tenant": tenant, "compacted": compacted},
        tenant,
    )
    return ErasureResult(
        request_id, tenant, scope, len(key_ids), erased, requested_by, approved_by,
        event.leaf.event_id, index, compacted,
    )  # fmt: skip


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
