"""Delivery receipts: what Envoy's log says the client got, where the enforcer's leaf misleads.

The ext_authz plugin matches each answer with Envoy's access log entry for the
request (by ``x-request-id``); when Envoy answered the client something else
(its ext_authz timeout fired after the plugin had decided, the client left,
another status), it logs a receipt event, path `RECEIPT_PATH`, result in
``schemas/receipt/receipt.schema.json``, through the same durable decision log. The one
receipt that says *delivered* (reason `RECEIPT_SHED_DELIVERED`) corrects a shed leaf the
plugin presumed unanswered (its deadline had passed by the plugin's clock) whose refusal
Envoy applied even so.

A receipt is its own leaf, kind ``receipt``, event id ``receipt:<decision id>``
(so a decision has at most one, found by a unique-index lookup), entry
``{v, kind: "receipt", receipt_id, decision_id, time, region, enforcer,
delivered, reason, answered, envoy}``, with the decision's tenant
beside it. Nothing in it is client-controlled: Envoy's status, its response
details and flags. It is checked as every enforcer record is
(`nexus_audit.enforcer_records`): only from the enforcer that made the
decision (else `ReceiptRefusedError`, 422, a security event), so no enforcer
can mark another's decisions unanswered; a receipt for a decision not in the
log is skipped and counted; a second receipt for a decision with other
content is a conflict (409).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.enforcer_records import EnforcerRecordKind, EnforcerRecordRefusedError
from nexus_audit.metrics import RECEIPT_FORGED
from nexus_audit.tables import Leaf
from nexus_contract.wire import RECEIPT_PATH, RECEIPT_REASONS, RECEIPT_SHED_DELIVERED

__all__ = [
    "RECEIPTS",
    "RECEIPT_EVENT_PREFIX",
    "RECEIPT_FORGED",
    "Receipt",
    "ReceiptRefusedError",
    "receipts_for",
]

RECEIPT_EVENT_PREFIX = "receipt:"
"""A receipt leaf's event id is this and the decision id."""
_LOOKUP_CHUNK = 500


class ReceiptRefusedError(EnforcerRecordRefusedError):
    """A receipt names a decision another enforcer made."""

    code = "receipt_refused"
    security_kind = RECEIPT_FORGED


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Answered(_Strict):
    allowed: StrictBool
    http_status: StrictInt | None = Field(default=None, ge=200, le=599)


class EnvoyAnswer(_Strict):
    response_code: StrictInt = Field(ge=0, le=599)
    details: StrictStr = Field(max_length=128)
    flags: list[StrictStr] = Field(max_length=16)


class Receipt(_Strict):
    """A receipt event's result (the contract's receipt schema)."""

    decision_id: StrictStr = Field(min_length=1, max_length=128)
    delivered: StrictBool
    reason: StrictStr
    answered: Answered
    envoy: EnvoyAnswer

    @model_validator(mode="after")
    def _known_words(self) -> Receipt:
        if self.delivered != (self.reason == RECEIPT_SHED_DELIVERED):
            raise ValueError(
                f"delivered is true with reason {RECEIPT_SHED_DELIVERED} only, and then always"
            )
        if self.reason not in (*RECEIPT_REASONS, RECEIPT_SHED_DELIVERED):
            raise ValueError(
                f"reason must be one of {', '.join(RECEIPT_REASONS)}, {RECEIPT_SHED_DELIVERED}"
            )
        for flag in self.envoy.flags:
            if not (1 <= len(flag) <= 8 and flag.isascii() and flag.isalpha() and flag.isupper()):
                raise ValueError(f"envoy.flags: {flag[:16]!r} is not an Envoy response flag")
        return self


def _entry(receipt: Receipt) -> Mapping[str, Any]:
    return {
        "delivered": receipt.delivered,
        "reason": receipt.reason,
        "answered": receipt.answered.model_dump(exclude_none=True),
        "envoy": receipt.envoy.model_dump(),
    }


RECEIPTS = EnforcerRecordKind(
    kind="receipt",
    path=RECEIPT_PATH,
    model=Receipt,
    decision_id=lambda receipt: receipt.decision_id,
    entry=_entry,
    refused=ReceiptRefusedError,
)
"""Receipts as an enforcer record kind."""


def receipts_for(session: Session, decision_ids: Iterable[str]) -> dict[str, str]:
    """The receipt reason of each of ``decision_ids`` that has a receipt leaf."""
    ids = sorted({RECEIPT_EVENT_PREFIX + d for d in decision_ids})
    found: dict[str, str] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        rows = session.execute(
            select(Leaf.event_id, Leaf.entry).where(
                Leaf.event_id.in_(ids[start : start + _LOOKUP_CHUNK])
            )
        ).tuples()
        for event_id, entry in rows:
            if event_id is not None:
                reason = orjson.loads(entry).get("reason")
                found[event_id.removeprefix(RECEIPT_EVENT_PREFIX)] = str(reason or "receipt")
    return found
