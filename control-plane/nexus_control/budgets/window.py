"""Budget windows: which stretch of time a tenant's caps count spend over.

A window is a calendar month, an ISO week (Monday to Monday), a day, or a fixed number of
days repeating from an anchor date, all counted in the tenant's IANA time zone. A window
starts at local midnight of its first day (the first instant of that day where midnight
does not exist) and ends where the next one starts, so the windows of a tenant tile time
with no gap and no overlap whatever daylight saving does: a day window is 23 or 25 hours
long across a change of clocks, and the instant a spend happened belongs to exactly one.

A window is named by its key, which only says where it starts, in the tenant's zone:
``2026-03`` (month), ``2026-W10`` (week), ``2026-03-02`` (day), ``2026-03-02/P7D`` (custom).
Counters and disabled tenants are keyed by it; a month window in UTC has the key the monthly
counters always had, so a UTC tenant's month is the same counter as before windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from nexus_control.authoring.config import TenantConfig

__all__ = [
    "DEFAULT_ZONE",
    "MAX_WINDOW_DAYS",
    "BudgetWindow",
    "WindowKind",
    "WindowSpan",
    "tenant_window",
]

DEFAULT_ZONE = "UTC"
"""The zone of a tenant whose spec names none."""
MAX_WINDOW_DAYS = 62
"""The longest custom window: request ids are remembered this long (``REQUEST_ID_TTL_S``),
so no usage report can be counted twice within one window."""


class WindowKind(StrEnum):
    MONTH = "month"
    WEEK = "week"
    DAY = "day"
    DAYS = "days"
    """A fixed number of days from an anchor date."""


@dataclass(frozen=True)
class WindowSpan:
    """One window: its key and the instants ``[start, end)`` it covers (UTC)."""

    key: str
    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class BudgetWindow:
    """A tenant's window rule; `span_at` places an instant in its window."""

    kind: WindowKind = WindowKind.MONTH
    zone: str = DEFAULT_ZONE
    days: int = 0
    """The length of a custom (``days``) window; 0 for the others."""
    anchor: date | None = None
    """The first day of one custom window (any window of the series would name it)."""

    def __post_init__(self) -> None:
        if self.kind is WindowKind.DAYS and (
            self.anchor is None or not 1 <= self.days <= MAX_WINDOW_DAYS
        ):
            raise ValueError(f"a custom window needs an anchor and 1-{MAX_WINDOW_DAYS} days")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def span_at(self, moment: datetime) -> WindowSpan:
        """The window ``moment`` (an aware instant) lies in."""
        if moment.tzinfo is None:
            raise ValueError("a window places aware instants only")
        local = moment.astimezone(self.tz).date()
        first, after = self._days_around(local)
        return WindowSpan(self._key(first), self._midnight(first), self._midnight(after))

    def describe(self) -> str:
        """How a person reads the rule (the diff and the README use it)."""
        if self.kind is WindowKind.DAYS:
            return f"{self.days} days from {self.anchor} ({self.zone})"
        return f"{self.kind.value} ({self.zone})"

    def _days_around(self, day: date) -> tuple[date, date]:
        """The first day of ``day``'s window and the first day of the next."""
        if self.kind is WindowKind.MONTH:
            first = day.replace(day=1)
            after = (first + timedelta(days=32)).replace(day=1)
            return first, after
        if self.kind is WindowKind.WEEK:
            first = day - timedelta(days=day.weekday())
            return first, first + timedelta(days=7)
        if self.kind is WindowKind.DAY:
            return day, day + timedelta(days=1)
        assert self.anchor is not None
        index = (day - self.anchor).days // self.days
        first = self.anchor + timedelta(days=index * self.days)
        return first, first + timedelta(days=self.days)

    def _midnight(self, day: date) -> datetime:
        """The first instant of ``day`` in the zone, in UTC.

        Where clocks jump over midnight, fold 0 reads the missing time with the offset in
        force before the jump, which lands on the jump itself: the day's first instant.
        """
        return datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)

    def _key(self, first: date) -> str:
        if self.kind is WindowKind.MONTH:
            return first.strftime("%Y-%m")
        if self.kind is WindowKind.WEEK:
            year, week, _ = first.isocalendar()
            return f"{year}-W{week:02d}"
        if self.kind is WindowKind.DAY:
            return first.isoformat()
        return f"{first.isoformat()}/P{self.days}D"


def tenant_window(tenant: TenantConfig) -> BudgetWindow:
    """The window of a tenant in the compiled config (a calendar month in UTC when the
    config predates windows)."""
    zone = tenant.get("time_zone", DEFAULT_ZONE)
    rule = tenant["budget"].get("window")
    if rule is None:
        return BudgetWindow(WindowKind.MONTH, zone)
    kind = WindowKind(rule["kind"])
    if kind is not WindowKind.DAYS:
        return BudgetWindow(kind, zone)
    return BudgetWindow(kind, zone, rule["days"], date.fromisoformat(rule["anchor"]))
