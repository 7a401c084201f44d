"""Decision search: the log's decisions found by time, tenant, outcome, route, tool, rule, control.

Leaves stay the only evidence. Search reads lookup tables derived from them
(`nexus_audit.tables.DecisionFacet`, `DecisionRule`, and the intake's own
``leaf_controls``), filled by `index_decisions`, which follows the log from
``search_state.indexed_size`` a batch at a time. The intake path is not
touched: a decision is searchable once the indexer has passed it (the
console runs it every `INDEX_EVERY_S` and before each search), and a lookup by
decision id reads ``leaves`` directly, indexed or not.

Every query is ordered by leaf index, newest first, and each filter has an
index led by its column and ending in ``leaf_index`` (the control filter uses
``leaf_controls``' primary key, the rule filter ``decision_rules``'), so a
page costs an index range scan whatever the log's size. Pages are cut by
``before`` (a leaf index), never by an offset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Table, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.catalog import Catalogs
from nexus_audit.payloads import PayloadStatus, PayloadVault
from nexus_audit.proof import TlogProof
from nexus_audit.receipts import receipts_for
from nexus_audit.tables import (
    CheckpointRow,
    ControlDay,
    DecisionFacet,
    DecisionRule,
    Leaf,
    LeafControl,
    SearchState,
)
from nexus_contract.errors import NexusError
from nexus_contract.wire import RECEIPT_SHED_DELIVERED, SHED_UNANSWERED

__all__ = [
    "BREAKDOWN_SAMPLE",
    "DEFAULT_PAGE",
    "INDEX_BATCH",
    "INDEX_EVERY_S",
    "MAX_PAGE",
    "QUERY_FIELDS",
    "Breakdown",
    "DecisionHit",
    "DecisionPage",
    "DecisionQuery",
    "DecisionRecord",
    "EvidenceCounts",
    "IndexBatch",
    "InvalidQueryError",
    "control_breakdown",
    "control_counts",
    "control_events",
    "hit_of",
    "indexed_size",
    "known_rules",
    "parse_query",
    "parse_time",
    "previous_checkpoint_size",
    "read_batch",
    "rules_of",
    "search_decisions",
    "tool_of",
    "with_receipts",
    "write_batch",
]

DEFAULT_PAGE = 50
MAX_PAGE = 500
INDEX_BATCH = 2000
"""Leaves one indexer transaction reads: short enough not to hold SQLite's write lock long."""
INDEX_EVERY_S = 1.0
"""How often the console's indexer loop follows the log."""
SEARCH_STATE_ROW = 1

_TOOL_ROUTE = re.compile(r"^/v1/tools/([^/:]+):invoke$")
_FACETS: Table = DecisionFacet.__table__  # type: ignore[assignment]
_FACET_COLUMNS = (
    "leaf_index", "time", "tenant", "allowed", "route", "tool", "region", "http_status",
)  # fmt: skip
_RULES: Table = DecisionRule.__table__  # type: ignore[assignment]
_RULE_COLUMNS = ("rule", "leaf_index")
_MAX_FILTER = 512


class InvalidQueryError(NexusError, ValueError):
    """A search filter is malformed (an unknown control, an empty period…); nothing was read."""


@dataclass(frozen=True)
class DecisionQuery:
    """What to look for; every field set narrows the search (``None``: any)."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    allowed: bool | None = None
    route: str | None = None
    tool: str | None = None
    rule: str | None = None
    control: str | None = None
    """A qualified control id (``SOC2:CC6.1``)."""
    decision_id: str | None = None
    before: int | None = None
    """Only leaves with a smaller index: the next page after a page ending there."""
    limit: int = DEFAULT_PAGE

    def check(self, catalogs: Catalogs) -> None:
        """Raise `InvalidQueryError` for a filter no decision could match."""
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidQueryError(f"limit must be between 1 and {MAX_PAGE}")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidQueryError("the period is empty: 'until' must be after 'since'")
        if self.before is not None and self.before < 0:
            raise InvalidQueryError("'before' is a leaf index (0 or more)")
        for name in ("tenant", "route", "tool", "rule", "control", "decision_id"):
            value = getattr(self, name)
            if value is not None and not 0 < len(value) <= _MAX_FILTER:
                raise InvalidQueryError(f"{name} must be 1 to {_MAX_FILTER} characters")
        if self.control is not None and not catalogs.is_known(self.control):
            raise InvalidQueryError(
                f"unknown control {self.control!r}: give a qualified id such as SOC2:CC6.1"
            )

    @property
    def is_lookup(self) -> bool:
        return self.decision_id is not None


@dataclass(frozen=True)
class DecisionHit:
    """One decision as search lists it (from its entry)."""

    index: int
    decision_id: str
    time: datetime
    tenant: str
    region: str
    enforcer: str
    method: str
    route: str
    tool: str | None
    allowed: bool
    http_status: int | None
    controls: tuple[str, ...]
    bundles: Mapping[str, str]
    error: str | None
    shed: str | None = None
    """Why the enforcer refused without asking the policy (`nexus_contract.wire.SHED_REASONS`)."""
    receipt: str | None = None
    """Why the enforcer's receipt says the client did not get this answer
    (`nexus_contract.wire.RECEIPT_REASONS`), or that it did get a shed refusal presumed
    lost (`RECEIPT_SHED_DELIVERED`); None without a receipt."""

    @property
    def answered(self) -> bool:
        """Whether the enforcer's answer reached the client: not for a shed Check Envoy had
        given up on, nor for an answer the enforcer's receipt says Envoy did not deliver
        (its timeout fired first): such a leaf records a request, not a decision received."""
        if self.receipt is not None:
            return self.receipt == RECEIPT_SHED_DELIVERED
        return self.shed not in SHED_UNANSWERED


def with_receipts(session: Session, hits: Sequence[DecisionHit]) -> tuple[DecisionHit, ...]:
    """``hits`` with the reason of each one's delivery receipt, where it has one."""
    found = receipts_for(session, (hit.decision_id for hit in hits))
    return tuple(
        replace(hit, receipt=found[hit.decision_id]) if hit.decision_id in found else hit
        for hit in hits
    )


@dataclass(frozen=True)
class DecisionPage:
    hits: tuple[DecisionHit, ...]
    next_before: int | None
    """Pass as ``before`` for the next page; None on the last one."""
    indexed_size: int
    """Leaves below this were searchable; newer ones are not indexed yet."""
    size: int
    rules: tuple[str, ...] = field(default=())
    """Rule names known to the index (for the search form), when asked for."""


@dataclass(frozen=True)
class DecisionRecord:
    """One decision in full: its entry, its payload when readable, its inclusion proof."""

    hit: DecisionHit
    entry: bytes
    """The exact bytes the leaf hash covers."""
    payload_status: PayloadStatus
    payload: Mapping[str, Any] | None
    """The masked input and the result, when ``payload_status`` is PRESENT."""
    proof: TlogProof
    """Against the latest checkpoint (a fresh one when the latest does not cover the leaf)."""

    @property
    def reasons(self) -> list[Mapping[str, Any]]:
        result = self.payload.get("result") if self.payload else None
        reasons = result.get("reasons") if isinstance(result, dict) else None
        return [r for r in reasons if isinstance(r, dict)] if isinstance(reasons, list) else []


QUERY_FIELDS = (
    "since", "until", "tenant", "outcome", "route", "tool", "rule", "control", "decision_id",
    "before", "limit",
)  # fmt: skip
"""The names `parse_query` reads (the API's query parameters and the console's form fields)."""


def parse_time(value: str, name: str, *, end_of_day: bool = False) -> datetime:
    """An RFC 3339 time or a ``YYYY-MM-DD`` date (UTC); a date as ``until`` means its end."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQueryError(
            f"{name}: {value!r} is not a date (YYYY-MM-DD) or an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:
        moment += timedelta(days=1)
    return moment


def parse_query(params: Mapping[str, str]) -> DecisionQuery:
    """A `DecisionQuery` from text fields; empty fields are absent. Raises `InvalidQueryError`."""
    given = {k: v.strip() for k, v in params.items() if k in QUERY_FIELDS and v.strip()}
    outcome = given.get("outcome")
    if outcome not in (None, "allowed", "denied"):
        raise InvalidQueryError(f"outcome: {outcome!r} is neither 'allowed' nor 'denied'")
    numbers: dict[str, int] = {}
    for name in ("before", "limit"):
        if name in given:
            try:
                numbers[name] = int(given[name])
            except ValueError:
                raise InvalidQueryError(f"{name}: {given[name]!r} is not a whole number") from None
    return DecisionQuery(
        since=parse_time(given["since"], "since") if "since" in given else None,
        until=parse_time(given["until"], "until", end_of_day=True) if "until" in given else None,
        tenant=given.get("tenant"),
        allowed=None if outcome is None else outcome == "allowed",
        route=given.get("route"),
        tool=given.get("tool"),
        rule=given.get("rule"),
        control=given.get("control"),
        decision_id=given.get("decision_id"),
        before=numbers.get("before"),
        limit=numbers.get("limit", DEFAULT_PAGE),
    )


def tool_of(route: str) -> str | None:
    """The tool a route invokes (``/v1/tools/{tool}:invoke``), else None."""
    found = _TOOL_ROUTE.match(route)
    return found.group(1) if found else None


def hit_of(index: int, entry_bytes: bytes) -> DecisionHit:
    """A decision leaf's entry as a search hit."""
    entry = orjson.loads(entry_bytes)
    outcome = entry.get("outcome") or {}
    route = str(entry.get("http_path") or "")
    return DecisionHit(
        index=index,
        decision_id=str(entry["decision_id"]),
        time=_parse_time(str(entry["time"])),
        tenant=str(entry.get("tenant") or ""),
        region=str(entry.get("region") or ""),
        enforcer=str(entry.get("enforcer") or ""),
        method=str(entry.get("method") or ""),
        route=route,
        tool=tool_of(route),
        allowed=bool(outcome.get("allowed")),
        http_status=outcome.get("http_status"),
        controls=tuple(entry.get("controls") or ()),
        bundles=dict(entry.get("bundles") or {}),
        error=outcome.get("error"),
        shed=outcome.get("shed"),
    )


def indexed_size(session: Session) -> int:
    value = session.scalar(
        select(SearchState.indexed_size).where(SearchState.id == SEARCH_STATE_ROW)
    )
    if value is None:
        raise storage.CorruptStorageError("the search_state row is missing; run the migrations")
    return value


@dataclass(frozen=True)
class IndexBatch:
    """Rows derived from leaves ``[start, end)``, read without holding any lock."""

    start: int
    end: int
    facets: list[tuple[Any, ...]]
    rules: list[tuple[str, int]]
    days: dict[tuple[str, str, str], int]


def read_batch(session: Session, vault: PayloadVault, *, batch: int = INDEX_BATCH) -> IndexBatch:
    """Derive the search rows of the next ``batch`` leaves after ``search_state.indexed_size``.

    Only reads, so intake and the checkpoint signer never wait on it; `write_batch`
    stores the result in a short transaction. Event leaves give only counts per
    control; a decision's rules come from its payload while it is readable.
    """
    start = indexed_size(session)
    end = min(storage.tree_size(session), start + batch)
    rows = (
        session.execute(
            select(Leaf.leaf_index, Leaf.kind, Leaf.entry)
            .where(Leaf.leaf_index >= start, Leaf.leaf_index < end)
            .order_by(Leaf.leaf_index)
        ).all()
        if end > start
        else []
    )
    hits: list[DecisionHit] = []
    days: dict[tuple[str, str, str], int] = {}
    for index, kind, entry in rows:
        if kind == "decision":
            hit = hit_of(index, entry)
            hits.append(hit)
            day, outcome, controls = (
                _day(hit.time),
                "allowed" if hit.allowed else "denied",
                hit.controls,
            )
        else:
            document = orjson.loads(entry)
            day = _day(_parse_time(str(document["time"])))
            outcome, controls = "event", tuple(document.get("controls") or ())
        for control in set(controls):
            key = (control, day, outcome)
            days[key] = days.get(key, 0) + 1
    facets = [
        (h.index, h.time.astimezone(UTC), h.tenant, h.allowed, h.route[:512], h.tool, h.region[:64],
         h.http_status)
        for h in hits
    ]  # fmt: skip
    rules = [(rule, index) for index, found in _rules(session, vault, hits) for rule in found]
    return IndexBatch(start, max(start, end), facets, rules, days)


def write_batch(session: Session, batch: IndexBatch) -> int:
    """Store ``batch`` unless another indexer got there first; returns leaves indexed.

    The state row moves from ``start`` to ``end`` in the same transaction as
    the rows, and only if it still reads ``start``: two indexers (two
    replicas) never store the same leaves twice.
    """
    if batch.end <= batch.start:
        return 0
    moved = session.execute(
        update(SearchState)
        .where(SearchState.id == SEARCH_STATE_ROW, SearchState.indexed_size == batch.start)
        .values(indexed_size=batch.end)
        .returning(SearchState.indexed_size)
    ).scalar()
    if moved is None:
        return 0
    storage.bulk_insert(session, _FACETS, _FACET_COLUMNS, batch.facets)
    storage.bulk_insert(session, _RULES, _RULE_COLUMNS, batch.rules)
    _add_control_days(session, batch.days)
    return batch.end - batch.start


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _add_control_days(session: Session, days: Mapping[tuple[str, str, str], int]) -> None:
    """Add ``days``' counts to ``control_days`` (insert, or add to the row there)."""
    if not days:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ControlDay)
    statement = statement.on_conflict_do_update(
        index_elements=["control", "day", "outcome"],
        set_={"count": ControlDay.count + statement.excluded["count"]},
    )
    session.execute(
        statement,
        [
            {"control": control, "day": day, "outcome": outcome, "count": count}
            for (control, day, outcome), count in sorted(days.items())
        ],
    )


def _rules(
    session: Session, vault: PayloadVault, hits: Sequence[DecisionHit]
) -> Iterable[tuple[int, set[str]]]:
    """The rule names of each hit's reasons, read from its payload when readable."""
    if not hits:
        return
    opened = vault.open(session, [hit.index for hit in hits])
    for hit in hits:
        payload = opened[hit.index]
        if payload.status is not PayloadStatus.PRESENT or payload.plaintext is None:
            continue
        yield hit.index, rules_of(orjson.loads(payload.plaintext))


def rules_of(payload: Mapping[str, Any]) -> set[str]:
    """Rule names in a decision payload's ``result.reasons``."""
    result = payload.get("result")
    reasons = result.get("reasons") if isinstance(result, dict) else None
    found: set[str] = set()
    for reason in reasons if isinstance(reasons, list) else ():
        rule = reason.get("rule") if isinstance(reason, dict) else None
        if isinstance(rule, str) and 0 < len(rule) <= 200:
            found.add(rule)
    return found


def search_decisions(session: Session, catalogs: Catalogs, query: DecisionQuery) -> DecisionPage:
    """One page of decisions matching ``query``, newest first."""
    query.check(catalogs)
    size = storage.tree_size(session)
    indexed = indexed_size(session)
    if query.decision_id is not None:
        found = storage.leaf_index_of_decision(session, query.decision_id)
        hits: tuple[DecisionHit, ...] = ()
        if found is not None:
            leaf = storage.leaf_at(session, found)
            if leaf is not None and _matches_lookup(hit := hit_of(found, leaf.entry), query):
                hits = with_receipts(session, (hit,))
        return DecisionPage(hits, None, indexed, size)

    facet = DecisionFacet
    statement = select(facet.leaf_index)
    if query.since is not None:
        statement = statement.where(facet.time >= query.since.astimezone(UTC))
    if query.until is not None:
        statement = statement.where(facet.time < query.until.astimezone(UTC))
    if query.tenant is not None:
        statement = statement.where(facet.tenant == query.tenant)
    if query.allowed is not None:
        statement = statement.where(facet.allowed.is_(query.allowed))
    if query.route is not None:
        statement = statement.where(facet.route == query.route)
    if query.tool is not None:
        statement = statement.where(facet.tool == query.tool)
    if query.before is not None:
        statement = statement.where(facet.leaf_index < query.before)
    if query.rule is not None:
        statement = statement.where(
            exists().where(
                DecisionRule.rule == query.rule, DecisionRule.leaf_index == facet.leaf_index
            )
        )
    if query.control is not None:
        statement = statement.where(
            exists().where(
                LeafControl.control == query.control, LeafControl.leaf_index == facet.leaf_index
            )
        )
    statement = statement.order_by(facet.leaf_index.desc()).limit(query.limit + 1)
    indexes = list(session.scalars(statement))
    more = len(indexes) > query.limit
    indexes = indexes[: query.limit]
    entries = _entries(session, indexes)
    hits = with_receipts(session, [hit_of(index, entries[index]) for index in indexes])
    return DecisionPage(hits, indexes[-1] if more else None, indexed, size)


def _entries(session: Session, indexes: Sequence[int]) -> dict[int, bytes]:
    if not indexes:
        return {}
    rows = session.execute(select(Leaf.leaf_index, Leaf.entry).where(Leaf.leaf_index.in_(indexes)))
    return dict(list(rows.tuples()))


def known_rules(session: Session, limit: int = 500) -> tuple[str, ...]:
    """Distinct rule names in the index (for the search form's suggestions)."""
    return tuple(
        session.scalars(
            select(DecisionRule.rule).distinct().order_by(DecisionRule.rule).limit(limit)
        )
    )


def _matches_lookup(hit: DecisionHit, query: DecisionQuery) -> bool:
    """A lookup by id still honours the other filters given with it."""
    if query.since is not None and hit.time < query.since:
        return False
    if query.until is not None and hit.time >= query.until:
        return False
    checks = (
        (query.tenant, hit.tenant),
        (query.route, hit.route),
        (query.tool, hit.tool),
    )
    if any(want is not None and want != have for want, have in checks):
        return False
    if query.allowed is not None and hit.allowed is not query.allowed:
        return False
    return query.control is None or query.control in hit.controls


# --- evidence per control ------------------------------------------------------


@dataclass(frozen=True)
class EvidenceCounts:
    """Indexed leaves evidencing one control in a period of whole days."""

    allowed: int = 0
    denied: int = 0
    events: int = 0

    @property
    def decisions(self) -> int:
        return self.allowed + self.denied

    @property
    def total(self) -> int:
        return self.decisions + self.events


@dataclass(frozen=True)
class Breakdown:
    """Decisions of a control grouped by tenant, route and tool, over its latest ``sample``."""

    sample: int
    """How many decisions were grouped (at most BREAKDOWN_SAMPLE, newest first)."""
    tenants: tuple[tuple[str, int, int], ...]
    """(tenant, allowed, denied), most decisions first."""
    routes: tuple[tuple[str, int, int], ...]
    tools: tuple[tuple[str, int, int], ...]


BREAKDOWN_SAMPLE = 5000
"""Decisions a control's breakdown groups: the newest of the period, so a page stays bounded."""
BREAKDOWN_TOP = 10


def control_counts(
    session: Session, prefix: str, since_day: str, until_day: str
) -> dict[str, EvidenceCounts]:
    """Per qualified control id starting with ``prefix``: counts for days in ``[since, until)``."""
    rows = session.execute(
        select(ControlDay.control, ControlDay.outcome, func.sum(ControlDay.count))
        .where(
            ControlDay.control.startswith(prefix),
            ControlDay.day >= since_day,
            ControlDay.day < until_day,
        )
        .group_by(ControlDay.control, ControlDay.outcome)
    ).tuples()
    buckets: dict[str, dict[str, int]] = {}
    for control, outcome, count in rows:
        bucket = buckets.setdefault(control, {"allowed": 0, "denied": 0, "events": 0})
        bucket["events" if outcome == "event" else outcome] += int(count or 0)
    return {control: EvidenceCounts(**bucket) for control, bucket in buckets.items()}


def control_events(
    session: Session, control: str, since: datetime, until: datetime, *, limit: int = 200
) -> list[tuple[int, Mapping[str, Any]]]:
    """The newest event leaves (approvals, rollouts, erasures, replays…) evidencing ``control``."""
    indexes = list(
        session.scalars(
            select(LeafControl.leaf_index)
            .where(
                LeafControl.control == control,
                LeafControl.kind == "event",
                LeafControl.time >= since.astimezone(UTC),
                LeafControl.time < until.astimezone(UTC),
            )
            .order_by(LeafControl.leaf_index.desc())
            .limit(limit)
        )
    )
    if not indexes:
        return []
    entries = _entries(session, indexes)
    return [(index, orjson.loads(entries[index])) for index in indexes]


def control_breakdown(
    session: Session, control: str, since: datetime, until: datetime
) -> Breakdown:
    """Decisions evidencing ``control`` in the period by tenant, route and tool (latest sample)."""
    latest = (
        select(LeafControl.leaf_index)
        .where(
            LeafControl.control == control,
            LeafControl.kind == "decision",
            LeafControl.time >= since.astimezone(UTC),
            LeafControl.time < until.astimezone(UTC),
        )
        .order_by(LeafControl.leaf_index.desc())
        .limit(BREAKDOWN_SAMPLE)
        .subquery()
    )
    rows = session.execute(
        select(
            DecisionFacet.tenant, DecisionFacet.route, DecisionFacet.tool, DecisionFacet.allowed
        ).join(latest, latest.c.leaf_index == DecisionFacet.leaf_index)
    ).tuples()
    groups: dict[str, dict[str, list[int]]] = {"tenant": {}, "route": {}, "tool": {}}
    sample = 0
    for tenant, route, tool, allowed in rows:
        sample += 1
        for name, value in (("tenant", tenant), ("route", route), ("tool", tool)):
            if value is None:
                continue
            counts = groups[name].setdefault(value, [0, 0])
            counts[0 if allowed else 1] += 1

    def top(name: str) -> tuple[tuple[str, int, int], ...]:
        ranked = sorted(groups[name].items(), key=lambda item: (-sum(item[1]), item[0]))
        return tuple((value, a, d) for value, (a, d) in ranked[:BREAKDOWN_TOP])

    return Breakdown(sample, top("tenant"), top("route"), top("tool"))


def previous_checkpoint_size(session: Session, size: int) -> int | None:
    """The largest checkpointed tree size below ``size``, if any."""
    found: int | None = session.scalar(
        select(func.max(CheckpointRow.size)).where(CheckpointRow.size < size)
    )
    return found
