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
details and flags. It is only taken from the enforcer that made the decision:
a decision in the log (or earlier in the same upload) with another
enforcer id refuses the upload (`ReceiptRefusedError`, 422, counted as a
security event), so no enforcer can mark another's decisions unanswered; a
receipt for a decision not in the log is skipped and counted. A second
receipt for a decision with other content is a conflict (409), like a
restated decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.entry import ENTRY_VERSION, format_time
from nexus_audit.events import PreparedEvent
from nexus_audit.intake import (
    DecisionConflictError,
    IntakeError,
    IntakeRules,
    InvalidEventError,
    ParsedEvent,
    check_event_source,
)
from nexus_audit.metrics import RECEIPT_FORGED
from nexus_audit.storage import NewLeaf
from nexus_audit.tables import Leaf
from nexus_contract.canonical import canonical_json
from nexus_contract.wire import RECEIPT_PATH, RECEIPT_REASONS, RECEIPT_SHED_DELIVERED

__all__ = [
    "RECEIPT_EVENT_PREFIX",
    "RECEIPT_FORGED",
    "PreparedReceipts",
    "ReceiptRefusedError",
    "SplitUpload",
    "prepare_receipts",
    "receipts_for",
    "split_receipts",
]

RECEIPT_EVENT_PREFIX = "receipt:"
"""A receipt leaf's event id is this and the decision id."""
_LOOKUP_CHUNK = 500


class ReceiptRefusedError(IntakeError):
    """A receipt names a decision another enforcer made."""

    code = "receipt_refused"

    def __init__(self, message: str, *, decision_id: str, owner: str) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.owner = owner


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


@dataclass(frozen=True)
class _Decided:
    enforcer: str
    tenant: str | None


@dataclass(frozen=True)
class PreparedReceipts:
    """An upload's receipts as leaves, and the decision ids of those skipped (not logged)."""

    events: list[PreparedEvent]
    skipped: list[str]


@dataclass(frozen=True)
class SplitUpload:
    """An upload's decisions and receipts, each with its position in the upload."""

    decisions: list[ParsedEvent]
    positions: list[int] | None
    """Of ``decisions``; None when the upload holds no receipt (then they are 0, 1, 2...)."""
    receipts: list[tuple[int, ParsedEvent]]


def split_receipts(parsed: Sequence[ParsedEvent]) -> SplitUpload:
    """The upload's decisions and its receipts (events at `RECEIPT_PATH`)."""
    if not any(item.event.path == RECEIPT_PATH for item in parsed):
        return SplitUpload(list(parsed), None, [])
    decisions: list[ParsedEvent] = []
    positions: list[int] = []
    receipts: list[tuple[int, ParsedEvent]] = []
    for index, item in enumerate(parsed):
        if item.event.path == RECEIPT_PATH:
            receipts.append((index, item))
        else:
            decisions.append(item)
            positions.append(index)
    return SplitUpload(decisions, positions, receipts)


def prepare_receipts(
    session: Session,
    receipts: Sequence[tuple[int, ParsedEvent]],
    batch: Iterable[tuple[str, str, str | None]],
    *,
    region: str | None,
    enforcer: str | None,
    now: datetime,
    rules: IntakeRules,
) -> PreparedReceipts:
    """Check each receipt against the decision it names and build its leaf.

    ``batch`` is (decision id, enforcer, tenant) of the upload's own
    decisions, which precede their receipts; every other decision is read from
    the log. Raises `ReceiptRefusedError` for a decision of another enforcer,
    `DecisionConflictError` for a second, different receipt. A receipt for a
    decision not in the log is skipped (and returned as such): its decision's
    own upload was refused, and refusing this one too would set aside the
    decisions beside it; keeping it could mark a decision logged later.
    """
    if not receipts:
        return PreparedReceipts([], [])
    known = {decision_id: _Decided(owner, tenant) for decision_id, owner, tenant in batch}
    validated = [(index, item, _receipt(index, item)) for index, item in receipts]
    wanted = sorted({r.decision_id for _, _, r in validated} - known.keys())
    known.update(_decided(session, wanted))
    prepared: list[PreparedEvent] = []
    skipped: list[str] = []
    for index, item, receipt in validated:
        event = item.event
        uploader = check_event_source(index, "receipt", event, region, enforcer)
        decided = known.get(receipt.decision_id)
        if decided is None:
            skipped.append(receipt.decision_id)
            continue
        if decided.enforcer != uploader:
            raise ReceiptRefusedError(
                f"event {index}: the receipt names decision {receipt.decision_id} of enforcer "
                f"{decided.enforcer!r}, but it is sent by {uploader!r}; an enforcer gives "
                "receipts for its own decisions only",
                decision_id=receipt.decision_id,
                owner=decided.enforcer,
            )
        time = event.timestamp
        if not now - rules.max_age <= time <= now + rules.max_ahead:
            time = now
        entry = canonical_json(
            {
                "v": ENTRY_VERSION,
                "kind": "receipt",
                "receipt_id": event.decision_id,
                "decision_id": receipt.decision_id,
                "time": format_time(time),
                "region": event.labels.region,
                "enforcer": uploader,
                "delivered": receipt.delivered,
                "reason": receipt.reason,
                "answered": receipt.answered.model_dump(exclude_none=True),
                "envoy": receipt.envoy.model_dump(),
            }
        )
        leaf = NewLeaf(
            entry=entry,
            kind="receipt",
            time=time,
            event_id=RECEIPT_EVENT_PREFIX + receipt.decision_id,
            tenant=decided.tenant,
        )
        prepared.append(PreparedEvent(leaf, None, None))
    _check_restated(session, prepared)
    return PreparedReceipts(prepared, skipped)


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


def _receipt(index: int, item: ParsedEvent) -> Receipt:
    try:
        return Receipt.model_validate(item.event.result)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["result", *(str(part) for part in first["loc"])])
        raise InvalidEventError(index, where, str(first["msg"]), item.event.decision_id) from None


def _decided(session: Session, decision_ids: Sequence[str]) -> Mapping[str, _Decided]:
    found: dict[str, _Decided] = {}
    for start in range(0, len(decision_ids), _LOOKUP_CHUNK):
        rows = session.execute(
            select(Leaf.decision_id, Leaf.entry, Leaf.tenant).where(
                Leaf.kind == "decision",
                Leaf.decision_id.in_(decision_ids[start : start + _LOOKUP_CHUNK]),
            )
        ).tuples()
        for decision_id, entry, tenant in rows:
            if decision_id is not None:
                found[decision_id] = _Decided(str(orjson.loads(entry).get("enforcer")), tenant)
    return found


def _check_restated(session: Session, prepared: Sequence[PreparedEvent]) -> None:
    """Refuse a receipt whose decision already has one with other content (or twice here)."""
    entries: dict[str, bytes] = {}
    for item in prepared:
        event_id = item.leaf.event_id
        assert event_id is not None
        if entries.setdefault(event_id, item.leaf.entry) != item.leaf.entry:
            raise _restated(event_id)
    ids = sorted(entries)
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        rows = session.execute(
            select(Leaf.event_id, Leaf.entry).where(
                Leaf.event_id.in_(ids[start : start + _LOOKUP_CHUNK])
            )
        ).tuples()
        for event_id, entry in rows:
            if event_id is not None and entry != entries[event_id]:
                raise _restated(event_id)


def _restated(event_id: str) -> DecisionConflictError:
    decision_id = event_id.removeprefix(RECEIPT_EVENT_PREFIX)
    return DecisionConflictError(
        decision_id, f"decision {decision_id} already has a receipt with other content"
    )
