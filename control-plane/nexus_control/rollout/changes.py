"""A rollout's semantic diff in pages: what the rollout page and its API route read.

A first publication of a big fleet changes tens of thousands of rows of data
(every tenant, grant and key is added), so the diff is never read whole to
show it. When a rollout is opened its data changes are written as rows
(`RolloutChange`) and counted in one summary row (`RolloutDiffSummary`);
a page is then one range scan of the primary key.

Ordinals are dense (0 … total-1) and follow the page's order: widening
changes first, then narrowing, then neutral, each in the diff's order. So one
effect's changes are one contiguous range of ordinals, which the summary's
counts locate, and a cursor is simply the ordinal a page ends (or starts) at.
The rows never change once written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.authoring.diff import Change, Effect, ModuleChange
from nexus_control.rollout.errors import RolloutNotFoundError
from nexus_control.store.tables import Rollout, RolloutChange, RolloutDiffSummary

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CURSOR",
    "MAX_LIMIT",
    "PAGE_ORDER",
    "DiffPage",
    "DiffPageError",
    "DiffSummary",
    "PageQuery",
    "diff_page",
    "parse_query",
    "record",
    "summary",
]

DEFAULT_LIMIT = 100
"""Changes on a page when the request names no limit."""
MAX_LIMIT = 500
"""The most changes one page may ask for."""
MAX_CURSOR = 2**31 - 1
"""Ordinals are 32-bit integer keys; a larger cursor is malformed, not a database error."""
PAGE_ORDER = (Effect.WIDENS, Effect.NARROWS, Effect.NEUTRAL)
"""The order of the ordinals: what a reviewer must see first comes first."""
INSERT_CHUNK = 5_000
"""Rows per INSERT when a diff is recorded: bounded statements for a 70k-change diff."""

_RANK = {effect.value: rank for rank, effect in enumerate(PAGE_ORDER)}


class DiffPageError(NexusError):
    """A page of a diff asked for with a malformed effect, cursor or limit; says which."""


@dataclass(frozen=True)
class PageQuery:
    """Which page: the changes of ``effect`` (all when None) after or before an ordinal."""

    effect: Effect | None = None
    after: int | None = None
    before: int | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class DiffSummary:
    """A diff without its data rows: how many changes of each effect and area, and its modules."""

    counts: Mapping[Effect, int]
    by_area: Mapping[str, Mapping[str, int]]
    """Area → effect → how many."""
    modules: tuple[ModuleChange, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def widens(self) -> bool:
        return self.counts[Effect.WIDENS] > 0

    def span(self, effect: Effect | None) -> tuple[int, int]:
        """The ordinals [start, end) of ``effect``'s changes (of every change when None)."""
        if effect is None:
            return 0, self.total
        start = 0
        for each in PAGE_ORDER:
            if each is effect:
                return start, start + self.counts[each]
            start += self.counts[each]
        raise AssertionError(effect)  # every Effect is in PAGE_ORDER


@dataclass(frozen=True)
class DiffPage:
    """One page of a rollout's data changes, with the cursors of its neighbours."""

    rollout_id: int
    summary: DiffSummary
    query: PageQuery
    changes: tuple[tuple[int, Change], ...]
    """(ordinal, change), in page order."""
    next_after: int | None
    """The ``after`` cursor of the next page; None on the last."""
    previous_before: int | None
    """The ``before`` cursor of the previous page; None on the first."""
    position: int
    """How many of the filter's changes come before this page."""
    of: int
    """How many changes the filter selects."""


def parse_query(
    effect: str | None = None,
    after: str | None = None,
    before: str | None = None,
    limit: str | None = None,
) -> PageQuery:
    """A page query from the text of a request (a form, a query string); an empty field is unset.

    Raises `DiffPageError` naming the field and what it expected.
    """
    chosen: Effect | None = None
    if effect:
        try:
            chosen = Effect(effect)
        except ValueError:
            names = ", ".join(e.value for e in PAGE_ORDER)
            raise DiffPageError(f"effect: {effect!r} is not one of {names}") from None
    start = _integer("after", after, 0, MAX_CURSOR)
    end = _integer("before", before, 0, MAX_CURSOR)
    if start is not None and end is not None:
        raise DiffPageError("after and before: give one cursor, not both")
    size = _integer("limit", limit, 1, MAX_LIMIT)
    return PageQuery(chosen, start, end, DEFAULT_LIMIT if size is None else size)


def _integer(name: str, text: str | None, low: int, high: int) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise DiffPageError(f"{name}: {text[:40]!r} is not a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise DiffPageError(f"{name}: {value} is not a whole number from {low} to {high}")
    return value


def record(session: Session, rollout_id: int, diff: Mapping[str, Any]) -> None:
    """Write the rows and the summary of ``diff`` (a `PolicyDiff` as JSON) for a new rollout.

    Called once, in the transaction that opens the rollout.
    """
    entries: list[Mapping[str, Any]] = list(diff.get("changes", ()))
    entries.sort(key=lambda c: _RANK[c["effect"]])  # stable: the diff's order within an effect
    counts = dict.fromkeys((e.value for e in PAGE_ORDER), 0)
    by_area: dict[str, dict[str, int]] = {}
    for entry in entries:
        counts[entry["effect"]] += 1
        area = by_area.setdefault(entry["area"], {})
        area[entry["effect"]] = area.get(entry["effect"], 0) + 1
    session.add(
        RolloutDiffSummary(
            rollout_id=rollout_id,
            widens=counts[Effect.WIDENS],
            narrows=counts[Effect.NARROWS],
            neutral=counts[Effect.NEUTRAL],
            by_area=dict(sorted(by_area.items())),
            modules=list(diff.get("modules", ())),
        )
    )
    for start in range(0, len(entries), INSERT_CHUNK):
        rows = [
            {
                "rollout_id": rollout_id,
                "ordinal": start + n,
                "effect": entry["effect"],
                "area": entry["area"],
                "subject": entry["subject"],
                "detail": entry["detail"],
            }
            for n, entry in enumerate(entries[start : start + INSERT_CHUNK])
        ]
        session.execute(insert(RolloutChange), rows)


def summary(session: Session, rollout_id: int) -> DiffSummary:
    """The summary of rollout ``rollout_id``'s diff; `RolloutNotFoundError` when there is none."""
    row = session.get(RolloutDiffSummary, rollout_id)
    if row is None:
        if session.get(Rollout, rollout_id) is None:
            raise RolloutNotFoundError(f"no rollout {rollout_id}")
        raise RolloutNotFoundError(
            f"rollout {rollout_id} has no recorded diff: run the control plane's migrations"
        )
    return DiffSummary(
        counts={
            Effect.WIDENS: row.widens,
            Effect.NARROWS: row.narrows,
            Effect.NEUTRAL: row.neutral,
        },
        by_area=row.by_area,
        modules=tuple(ModuleChange.model_validate(m) for m in row.modules),
    )


def diff_page(session: Session, rollout_id: int, query: PageQuery | None = None) -> DiffPage:
    """One page of rollout ``rollout_id``'s data changes: at most ``query.limit`` of them.

    With ``after``, the changes whose ordinal follows it; with ``before``, those
    that precede it; with neither, the first. A cursor past either end gives an
    empty page whose link leads back.
    """
    query = query or PageQuery()
    found = summary(session, rollout_id)
    low, high = found.span(query.effect)
    if query.before is not None:
        end = max(low, min(query.before, high))
        start = max(low, end - query.limit)
    else:
        start = low if query.after is None else max(low, min(query.after + 1, high))
        end = min(high, start + query.limit)
    rows = session.execute(
        select(
            RolloutChange.ordinal,
            RolloutChange.effect,
            RolloutChange.area,
            RolloutChange.subject,
            RolloutChange.detail,
        )
        .where(
            RolloutChange.rollout_id == rollout_id,
            RolloutChange.ordinal >= start,
            RolloutChange.ordinal < end,
        )
        .order_by(RolloutChange.ordinal)
    ).all()
    changes = tuple(
        (r.ordinal, Change(area=r.area, subject=r.subject, detail=r.detail, effect=r.effect))
        for r in rows
    )
    return DiffPage(
        rollout_id=rollout_id,
        summary=found,
        query=query,
        changes=changes,
        next_after=end - 1 if end < high else None,
        previous_before=start if start > low else None,
        position=start - low,
        of=high - low,
    )
