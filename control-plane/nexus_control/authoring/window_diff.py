"""Semantic changes to a tenant's budget window and the time zone it is counted in.

Every such change widens, whatever its direction, and so needs a second approver: the
counters are keyed by the window (`nexus_control.budgets.window`), so a new rule or zone
starts the tenant in a window whose spend so far does not hold what the old one had
counted, or ends the open window hours early; a shorter window with the same cap also
lets more through over time, and a longer one resets now all the same. The detail says
how the cap's rate per day moves, so a reviewer sees how much more may be spent. Kept
apart from `nexus_control.authoring.diff` so that module stays one concern per differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nexus_control.authoring.diff import Change, Effect

__all__ = ["window_changes"]

_MEAN_DAYS = {"month": 365.2425 / 12, "week": 7.0, "day": 1.0}
"""How long each named window is on average, in days (for the rate shown)."""


def window_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _tenants(old), _tenants(new)
    for tid in sorted(before.keys() & after.keys()):
        a, b = before[tid], after[tid]
        rule_a, rule_b = _rule(a), _rule(b)
        if rule_a != rule_b:
            yield Change(
                area="budget",
                subject=tid,
                detail=(
                    f"budget window: {_shown(rule_a)} → {_shown(rule_b)} (counting restarts in "
                    f"a new window; {_rate(a, rule_a, b, rule_b)})"
                ),
                effect=Effect.WIDENS,
            )
        zone_a, zone_b = _zone(a), _zone(b)
        if zone_a != zone_b:
            yield Change(
                area="budget",
                subject=tid,
                detail=(
                    f"budget time zone: {zone_a} → {zone_b} (window boundaries move: the "
                    "open window may end early and its spend start again)"
                ),
                effect=Effect.WIDENS,
            )


def _tenants(doc: Mapping[str, Any]) -> dict[str, Any]:
    tenants = doc.get("tenants", {})
    return (
        {t: v for t, v in tenants.items() if isinstance(v, dict)}
        if isinstance(tenants, dict)
        else {}
    )


def _budget(tenant: Mapping[str, Any]) -> Mapping[str, Any]:
    budget = tenant.get("budget", {})
    return budget if isinstance(budget, dict) else {}


def _rule(tenant: Mapping[str, Any]) -> tuple[str, int, str]:
    """(kind, days, anchor); a config without a window counts the calendar month."""
    window = _budget(tenant).get("window")
    if not isinstance(window, dict):
        return ("month", 0, "")
    return (str(window.get("kind")), int(window.get("days", 0)), str(window.get("anchor", "")))


def _zone(tenant: Mapping[str, Any]) -> str:
    return str(tenant.get("time_zone", "UTC"))


def _shown(rule: tuple[str, int, str]) -> str:
    kind, days, anchor = rule
    return f"{days} days from {anchor}" if kind == "days" else kind


def _days(rule: tuple[str, int, str]) -> float:
    kind, days, _ = rule
    return float(days) if kind == "days" else _MEAN_DAYS.get(kind, 1.0)


def _rate(
    a: Mapping[str, Any],
    rule_a: tuple[str, int, str],
    b: Mapping[str, Any],
    rule_b: tuple[str, int, str],
) -> str:
    cap_a, cap_b = _budget(a).get("monthly_cap_usd"), _budget(b).get("monthly_cap_usd")
    if not isinstance(cap_a, int | float) or not isinstance(cap_b, int | float) or cap_a <= 0:
        return "the cap per day cannot be compared"
    factor = (cap_b / _days(rule_b)) / (cap_a / _days(rule_a))
    return f"cap {cap_a} → {cap_b} per window, {factor:.2f} times the spend per day"
