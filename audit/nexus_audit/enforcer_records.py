"""Enforcer records: events an enforcer logs about a decision it made, each its own leaf kind.

A delivery receipt (`nexus_audit.receipts`) and a shadow outcome
(`nexus_audit.shadows`) reach the intake the same way: a decision-log event at
the kind's path, through the enforcer's durable log, naming the decision it is
about. They are checked the same way, here, once: the result is validated by
the kind's model; the decision is looked up in the upload (which precedes its
records) or the log; a decision of another enforcer refuses the upload
(`EnforcerRecordRefusedError`, 422, a security event), so no enforcer speaks
about another's decisions; a record for a decision not in the log is skipped
and counted (its decision's upload was refused; refusing this one too would set
aside the decisions beside it). A decision has at most one record of a kind,
event id ``<kind>:<decision id>``; a second one with other content is a
conflict (409), like a restated decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
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
from nexus_audit.storage import NewLeaf
from nexus_audit.tables import Leaf
from nexus_contract.canonical import canonical_json

__all__ = [
    "EnforcerRecordKind",
    "EnforcerRecordRefusedError",
    "PreparedRecords",
    "SplitUpload",
    "prepare_records",
    "split_upload",
]

_LOOKUP_CHUNK = 500
RecordT = TypeVar("RecordT", bound=BaseModel)


class EnforcerRecordRefusedError(IntakeError):
    """A record names a decision another enforcer made."""

    code = "record_refused"
    security_kind = "record_forged"
    """The security event's kind (`nexus_audit.metrics`) this refusal is counted as."""

    def __init__(self, message: str, *, decision_id: str, owner: str) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.owner = owner


@dataclass(frozen=True)
class EnforcerRecordKind(Generic[RecordT]):
    """One kind of enforcer record: where it arrives, how it is read, what its leaf says."""

    kind: str
    """The leaf kind, and what messages call it."""
    path: str
    """The decision-log ``path`` its events arrive at."""
    model: type[RecordT]
    decision_id: Callable[[RecordT], str]
    entry: Callable[[RecordT], Mapping[str, Any]]
    """The leaf entry's own fields (beside v, kind, record id, decision, time, region, enforcer)."""
    refused: type[EnforcerRecordRefusedError]

    @property
    def event_prefix(self) -> str:
        return f"{self.kind}:"


@dataclass(frozen=True)
class SplitUpload:
    """An upload's decisions and its enforcer records by path, each with its position."""

    decisions: list[ParsedEvent]
    positions: list[int] | None
    """Of ``decisions``; None when the upload holds no record (then they are 0, 1, 2...)."""
    records: Mapping[str, list[tuple[int, ParsedEvent]]]


@dataclass(frozen=True)
class PreparedRecords:
    """An upload's records of one kind as leaves, and the decision ids of those skipped."""

    events: list[PreparedEvent]
    skipped: list[str]


def split_upload(parsed: Sequence[ParsedEvent], paths: Iterable[str]) -> SplitUpload:
    """The upload's decisions, and its events at each of ``paths``."""
    wanted = frozenset(paths)
    if not any(item.event.path in wanted for item in parsed):
        return SplitUpload(list(parsed), None, {})
    decisions: list[ParsedEvent] = []
    positions: list[int] = []
    records: dict[str, list[tuple[int, ParsedEvent]]] = {path: [] for path in wanted}
    for index, item in enumerate(parsed):
        if item.event.path in wanted:
            records[item.event.path].append((index, item))
        else:
            decisions.append(item)
            positions.append(index)
    return SplitUpload(decisions, positions, records)


@dataclass(frozen=True)
class _Decided:
    enforcer: str
    tenant: str | None


def prepare_records(
    session: Session,
    spec: EnforcerRecordKind[RecordT],
    records: Sequence[tuple[int, ParsedEvent]],
    batch: Iterable[tuple[str, str, str | None]],
    *,
    region: str | None,
    enforcer: str | None,
    now: datetime,
    rules: IntakeRules,
) -> PreparedRecords:
    """Check each record against the decision it names and build its leaf.

    ``batch`` is (decision id, enforcer, tenant) of the upload's own decisions;
    every other decision is read from the log. Raises ``spec.refused`` for a
    decision of another enforcer, `DecisionConflictError` for a restated record.
    """
    if not records:
        return PreparedRecords([], [])
    known = {decision_id: _Decided(owner, tenant) for decision_id, owner, tenant in batch}
    validated = [(index, item, _validated(spec, index, item)) for index, item in records]
    wanted = sorted({spec.decision_id(r) for _, _, r in validated} - known.keys())
    known.update(_decided(session, wanted))
    prepared: list[PreparedEvent] = []
    skipped: list[str] = []
    for index, item, record in validated:
        event = item.event
        decision_id = spec.decision_id(record)
        uploader = check_event_source(index, spec.kind, event, region, enforcer)
        decided = known.get(decision_id)
        if decided is None:
            skipped.append(decision_id)
            continue
        if decided.enforcer != uploader:
            raise spec.refused(
                f"event {index}: the {spec.kind} record names decision {decision_id} of "
                f"enforcer {decided.enforcer!r}, but it is sent by {uploader!r}; an enforcer "
                f"logs {spec.kind} records for its own decisions only",
                decision_id=decision_id,
                owner=decided.enforcer,
            )
        time = event.timestamp
        if not now - rules.max_age <= time <= now + rules.max_ahead:
            time = now
        entry = canonical_json(
            {
                "v": ENTRY_VERSION,
                "kind": spec.kind,
                f"{spec.kind}_id": event.decision_id,
                "decision_id": decision_id,
                "time": format_time(time),
                "region": event.labels.region,
                "enforcer": uploader,
                **spec.entry(record),
            }
        )
        leaf = NewLeaf(
            entry=entry,
            kind=spec.kind,
            time=time,
            event_id=spec.event_prefix + decision_id,
            tenant=decided.tenant,
        )
        prepared.append(PreparedEvent(leaf, None, None))
    _check_restated(session, spec, prepared)
    return PreparedRecords(prepared, skipped)


def _validated(spec: EnforcerRecordKind[RecordT], index: int, item: ParsedEvent) -> RecordT:
    try:
        return spec.model.model_validate(item.event.result)
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


def _check_restated(
    session: Session, spec: EnforcerRecordKind[Any], prepared: Sequence[PreparedEvent]
) -> None:
    """Refuse a record whose decision already has one of its kind with other content."""
    entries: dict[str, bytes] = {}
    for item in prepared:
        event_id = item.leaf.event_id
        assert event_id is not None
        if entries.setdefault(event_id, item.leaf.entry) != item.leaf.entry:
            raise _restated(spec, event_id)
    ids = sorted(entries)
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        rows = session.execute(
            select(Leaf.event_id, Leaf.entry).where(
                Leaf.event_id.in_(ids[start : start + _LOOKUP_CHUNK])
            )
        ).tuples()
        for event_id, entry in rows:
            if event_id is not None and entry != entries[event_id]:
                raise _restated(spec, event_id)


def _restated(spec: EnforcerRecordKind[Any], event_id: str) -> DecisionConflictError:
    decision_id = event_id.removeprefix(spec.event_prefix)
    return DecisionConflictError(
        decision_id, f"decision {decision_id} already has a {spec.kind} record with other content"
    )
