"""Semantic changes to what a tenant's budget does while a spend anomaly is on hold.

The hold narrows a tenant (a lower soft cap, costlier models refused), so anything that
weakens it widens: the action removed, the soft cap it lowers to raised, the price above
which models are held raised or dropped. Kept apart from `nexus_control.authoring.diff`
so that module stays one concern per differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nexus_control.authoring.diff import Change, Effect

__all__ = ["anomaly_changes"]

_ACTIONS = {
    "lower_soft_cap_to_ratio": "soft cap while an anomaly is held",
    "hold_models_above_usd_per_mtok": "models held above USD/Mtok while an anomaly is held",
}
"""Each action and how a change to it reads; for both, a higher figure is weaker."""


def anomaly_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _tenants(old), _tenants(new)
    for tid in sorted(before.keys() & after.keys()):
        a, b = _action(before[tid]), _action(after[tid])
        for key, label in _ACTIONS.items():
            was, now = a.get(key), b.get(key)
            if was == now:
                continue
            weaker = now is None or (was is not None and now > was)
            yield Change(
                area="budget",
                subject=tid,
                detail=f"{label}: {_shown(was)} → {_shown(now)}",
                effect=Effect.WIDENS if weaker else Effect.NARROWS,
            )


def _tenants(doc: Mapping[str, Any]) -> dict[str, Any]:
    tenants = doc.get("tenants", {})
    return tenants if isinstance(tenants, dict) else {}


def _action(tenant: Any) -> dict[str, Any]:
    budget = tenant.get("budget", {}) if isinstance(tenant, dict) else {}
    action = budget.get("on_anomaly", {}) if isinstance(budget, dict) else {}
    return action if isinstance(action, dict) else {}


def _shown(value: Any) -> str:
    return "none" if value is None else f"{value}"
