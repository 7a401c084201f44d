"""The rollout page's diff section: one page of changes, the summary, and the links around it.

The page lists the changes a page at a time (`nexus_control.rollout.changes`),
widening ones first and highlighted; tabs keep one effect's changes, and
next/previous links carry the cursor with the filter and the page size. The
query string's fields are the API route's (``effect``, ``after``, ``before``,
``limit``), refused with the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from nexus_control.authoring.diff import Effect
from nexus_control.plane import ControlPlane
from nexus_control.rollout.changes import PAGE_ORDER, DiffPage, parse_query

__all__ = ["DiffSection", "Tab", "diff_section"]

PAGE_FIELDS = ("effect", "after", "before", "limit")


@dataclass(frozen=True)
class Tab:
    label: str
    count: int
    url: str
    current: bool


@dataclass(frozen=True)
class DiffSection:
    page: DiffPage
    tabs: tuple[Tab, ...]
    next_url: str | None
    previous_url: str | None

    @property
    def first(self) -> int:
        """The place (from 1) of the page's first change among those the filter selects."""
        return self.page.position + 1 if self.page.changes else self.page.position

    @property
    def last(self) -> int:
        return self.page.position + len(self.page.changes)


def diff_section(
    plane: ControlPlane, rollout_id: int, base: str, fields: Mapping[str, str]
) -> DiffSection:
    """The diff section of the rollout page at ``base`` for the query string ``fields``.

    Raises `DiffPageError` (a 400 with the field at fault) for a malformed one.
    """
    query = parse_query(*(fields.get(name) for name in PAGE_FIELDS))
    page = plane.rollouts.diff_page(rollout_id, query)
    limit = str(query.limit) if fields.get("limit") else None

    def url(effect: Effect | None, **cursor: int) -> str:
        params = {"effect": effect.value if effect else None, "limit": limit}
        params.update({name: str(value) for name, value in cursor.items()})
        kept = {name: value for name, value in params.items() if value}
        return f"{base}?{urlencode(kept)}#diff-h" if kept else f"{base}#diff-h"

    counts = page.summary.counts
    tabs = (
        Tab("all", page.summary.total, url(None), query.effect is None),
        *(Tab(e.value, counts[e], url(e), query.effect is e) for e in PAGE_ORDER),
    )
    return DiffSection(
        page=page,
        tabs=tabs,
        next_url=None if page.next_after is None else url(query.effect, after=page.next_after),
        previous_url=(
            None if page.previous_before is None else url(query.effect, before=page.previous_before)
        ),
    )
