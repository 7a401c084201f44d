"""Live budgets: usage reports in, spend ratios, remaining budgets and disabled tenants out.

Caps come from the policy the control plane last published (its
``data.nexus.config.tenants[*].budget``); spend comes from the spend store.
The result is the state document the ``nexus-state`` bundle carries, which
enforcers long-poll: a tenant over its cap is refused within seconds.

Caps count the tenant's budget window (`nexus_control.budgets.window`) open at the
control plane's clock: a report is charged to the window containing its ``occurred_at``
while that window is open, and to the open one when its ``occurred_at`` lies in a window
already closed, since a closed window's cap refuses nothing any more and spend booked
there would escape every cap. The cost data (hour and day cells, the monthly totals) still
place the spend where ``occurred_at`` says, so they reconcile with the reports received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_contract.wire import GATEWAY_ROUTES
from nexus_control.access import approval_uses
from nexus_control.authoring.config import BudgetConfig, CompiledConfig, TenantConfig
from nexus_control.budgets.cells import DAYS_KEPT
from nexus_control.budgets.holds import holds_state
from nexus_control.budgets.money import MICROS_PER_USD
from nexus_control.budgets.spend import SpendStore, SpendTotals, Usage, day_of, period_of
from nexus_control.budgets.state import DisabledEntry, SpendRatios, StateDocument
from nexus_control.budgets.window import WindowSpan, tenant_window
from nexus_control.health.reports import health_state, list_health
from nexus_control.store import outbox
from nexus_control.store.tables import DisabledTenant

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_DISABLED_REASON",
    "MAX_REPORT_AGE",
    "GatewayScopeError",
    "UnknownTenantError",
    "UsageOutcome",
    "UsageRefusedError",
    "UsageReport",
    "charged_window",
    "disable_tenant",
    "open_windows",
    "ratios",
    "record_usage",
    "remaining_micro_usd",
    "state_document",
]

_Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")]
_Route = Annotated[str, StringConstraints(max_length=64)]
_ROUTE_NAMES = ", ".join(GATEWAY_ROUTES)


class UsageReport(BaseModel):
    """``POST /v1/usage``: one gateway request's cost, reported once or more."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: Annotated[
        str, StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    ]
    tenant: _Id
    model: _Id
    feature: _Id | None = None
    endpoint: _Route | None = None
    """The gateway route the cost was incurred on, by name (``chat.completions``): one of
    the contract's `GATEWAY_ROUTES`, so the counters' keys stay bounded."""
    tokens: Annotated[int, Field(ge=0, le=10_000_000)]
    cost_usd: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False, strict=False)]
    occurred_at: datetime | None = Field(default=None, strict=False)


MAX_DISABLED_REASON = 300
"""The stored reason's bound (``disabled_tenants.reason``)."""
MAX_CLOCK_SKEW = timedelta(seconds=60)
"""How far ahead of the control plane's clock a gateway's ``occurred_at`` may be."""
MAX_REPORT_AGE = DAYS_KEPT
"""How far back ``occurred_at`` may be: no older than the spend cells are kept."""


class UnknownTenantError(NexusError):
    """Usage for a tenant the published policy does not know."""


class UsageRefusedError(NexusError):
    """Usage that cannot be counted as reported (in the future, unknown model or feature)."""


class GatewayScopeError(NexusError):
    """A gateway token reporting for a tenant outside its scope."""


def known_features(config: CompiledConfig, tenant: str) -> frozenset[str]:
    """Features ``tenant``'s spend may be booked to: its capped ones and its keys' bindings."""
    entry = config.get("tenants", {}).get(tenant)
    capped = frozenset(entry["budget"].get("per_feature", {})) if entry is not None else frozenset()
    bound = {
        entry["feature"]
        for entry in config.get("api_keys", {}).values()
        if entry["tenant"] == tenant and "feature" in entry
    }
    return capped | frozenset(bound)


def known_models(config: CompiledConfig, tenant: str) -> frozenset[str]:
    """Models ``tenant``'s spend may be booked to: its plan's and the ones it caps."""
    entry = config.get("tenants", {}).get(tenant)
    if entry is None:
        return frozenset()
    plan = entry["plan"]
    allowed = {m for m, model in config.get("models", {}).items() if model["plans"].get(plan)}
    return frozenset(allowed) | frozenset(entry["budget"].get("per_model", {}))


def check_report(config: CompiledConfig, report: UsageReport, now: datetime) -> None:
    """Refuse (UsageRefusedError) a report that would count what cannot have happened."""
    if report.occurred_at is not None:
        when = report.occurred_at
        if when.tzinfo is None:
            raise UsageRefusedError("occurred_at needs a time zone (RFC 3339, e.g. ...Z)")
        if when - now > MAX_CLOCK_SKEW:
            raise UsageRefusedError(
                f"occurred_at {when.isoformat()} is in the future (the control plane's clock "
                f"says {now.isoformat()}; at most {MAX_CLOCK_SKEW.seconds} s of skew is accepted)"
            )
        if now - when > MAX_REPORT_AGE:
            raise UsageRefusedError(
                f"occurred_at {when.isoformat()} is more than {MAX_REPORT_AGE.days} days ago: "
                "spend that old is no longer kept"
            )
    if report.endpoint is not None and report.endpoint not in GATEWAY_ROUTES:
        raise UsageRefusedError(
            f"unknown route {report.endpoint!r}: a usage report names a gateway route by name, "
            f"one of {_ROUTE_NAMES}"
        )
    if report.model not in config.get("models", {}):
        raise UsageRefusedError(f"unknown model {report.model!r}: not in the policy in force")
    if report.model not in known_models(config, report.tenant):
        raise UsageRefusedError(
            f"model {report.model!r} is not one tenant {report.tenant!r} may use: neither its "
            "plan allows it nor does its budget cap it, in the policy in force"
        )
    if report.feature is not None and report.feature not in known_features(config, report.tenant):
        raise UsageRefusedError(
            f"unknown feature {report.feature!r} for tenant {report.tenant!r}: neither capped "
            "nor bound to one of its keys in the policy in force"
        )


@dataclass(frozen=True)
class UsageOutcome:
    counted: bool
    tenant: str
    period: str
    ratio: float | None
    disabled: bool
    window: str = ""
    """The key of the budget window the report was charged to."""


def charged_window(tenant: TenantConfig, occurred: datetime, now: datetime) -> WindowSpan:
    """The budget window spend that happened at ``occurred`` is charged to, at ``now``: its
    own while it is open, else the open one (a closed window's cap refuses nothing)."""
    window = tenant_window(tenant)
    current = window.span_at(now)
    return current if occurred < current.start else window.span_at(min(occurred, now))


def remaining_micro_usd(cap_usd: float, spent_micros: int) -> int:
    """``cap_usd`` less ``spent_micros``, in micro-USD: exact, as the counters are integer
    micro-dollars; a cap finer than a micro-dollar is rounded down, never up."""
    cap = Decimal(repr(float(cap_usd))) * MICROS_PER_USD
    return int(cap.to_integral_value(rounding=ROUND_FLOOR)) - spent_micros


def ratios(budget: BudgetConfig, totals: SpendTotals) -> SpendRatios:
    """Spend ÷ cap and what is left, overall and for every model and feature with a cap."""
    cap = float(budget["monthly_cap_usd"])
    per_model = budget.get("per_model", {})
    per_feature = budget.get("per_feature", {})
    return {
        "ratio": round(totals.total / cap, 6),
        "models": {
            m: round(totals.models.get(m, 0.0) / float(c), 6) for m, c in sorted(per_model.items())
        },
        "features": {
            f: round(totals.features.get(f, 0.0) / float(c), 6)
            for f, c in sorted(per_feature.items())
        },
        "remaining": {
            "total": remaining_micro_usd(cap, totals.total_micros),
            "models": {
                m: remaining_micro_usd(c, totals.model_micros.get(m, 0))
                for m, c in sorted(per_model.items())
            },
            "features": {
                f: remaining_micro_usd(c, totals.feature_micros.get(f, 0))
                for f, c in sorted(per_feature.items())
            },
        },
    }


def record_usage(
    session: Session,
    store: SpendStore,
    config: CompiledConfig,
    report: UsageReport,
    now: datetime | None = None,
) -> UsageOutcome:
    """Count ``report`` once; disable the tenant when it crosses a hard cap set to disable.

    ``now`` is the control plane's clock (tests inject it).
    """
    tenant = config.get("tenants", {}).get(report.tenant)
    if tenant is None:
        raise UnknownTenantError(f"unknown tenant {report.tenant!r}")
    now = now or datetime.now(UTC)
    check_report(config, report, now)
    # Within the skew, a report slightly ahead counts now: the period is the control plane's.
    when = min(report.occurred_at, now) if report.occurred_at is not None else now
    period = period_of(when)
    window = charged_window(tenant, when, now)
    totals = store.record(
        Usage(
            request_id=report.request_id,
            tenant=report.tenant,
            model=report.model,
            feature=report.feature,
            tokens=report.tokens,
            cost_usd=report.cost_usd,
            period=period,
            day=day_of(when),
            endpoint=report.endpoint,
            hour=when.astimezone(UTC).hour,
            window=window.key,
            window_end=window.end,
        )
    )
    if totals is None:
        return UsageOutcome(False, report.tenant, period, None, False, window.key)
    budget = tenant["budget"]
    ratio = ratios(budget, totals)["ratio"]
    disabled = False
    if ratio >= 1 and budget.get("on_hard_cap") == "disable":
        disabled = _disable(session, report.tenant, window.key, ratio, now)
    return UsageOutcome(True, report.tenant, period, ratio, disabled, window.key)


def _disable(session: Session, tenant: str, window: str, ratio: float, now: datetime) -> bool:
    reason = f"hard cap reached in budget window {window} ({ratio:.0%} of cap)"
    return disable_tenant(session, tenant, window, actor="budget", reason=reason, now=now)


def disable_tenant(
    session: Session,
    tenant: str,
    window: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
    **detail: str,
) -> bool:
    """Disable ``tenant`` for its budget window ``window`` (a key: enforcers refuse it once
    the state bundle carries it) and record ``tenant.disabled`` in ``actor``'s name; False
    if it already was.

    The caller checks that the policy in force knows the tenant. Nothing re-enables a tenant
    within its window: the next window starts without it. The audit event names the window
    as its ``period`` (for a calendar month in UTC, the two are the same ``YYYY-MM``).
    """
    if session.get(DisabledTenant, (tenant, window)) is not None:
        return False
    reason = reason[:MAX_DISABLED_REASON]
    since = now or datetime.now(UTC)
    session.add(DisabledTenant(tenant=tenant, period=window, reason=reason, since=since))
    outbox.record(
        session, "tenant.disabled", actor, tenant=tenant, period=window, reason=reason, **detail
    )
    return True


def open_windows(config: CompiledConfig | None, now: datetime) -> dict[str, WindowSpan]:
    """Every tenant's budget window open at ``now``."""
    tenants = config["tenants"] if config is not None else {}
    return {tid: tenant_window(tenant).span_at(now) for tid, tenant in sorted(tenants.items())}


def state_document(
    session: Session,
    store: SpendStore,
    config: CompiledConfig | None,
    period: str,
    now: datetime | None = None,
) -> StateDocument:
    """The ``data.nexus_state`` document at ``now`` (see rego/README.md): ``period`` names
    the UTC month, and each tenant's spend and disabled entry are those of its budget window
    open at ``now``, whose end ``resets`` lists.

    Without a policy in force no cap is known, so no spend is published. Used
    approvals are listed until they expire, whatever the policy. ``as_of`` is when spend
    was read (``now``, default the clock before reading it), in Unix milliseconds.
    """
    # Taken before spend is read: every report counted by then is in this document, so
    # an enforcer may release the budget holds of requests that ended before it.
    moment = now or datetime.now(UTC)
    tenants = config["tenants"] if config is not None else {}
    windows = open_windows(config, moment)
    keys = {tenant: span.key for tenant, span in windows.items()}
    spend = {
        tenant: ratios(tenants[tenant]["budget"], totals)
        for tenant, totals in sorted(store.window_totals(keys).items())
    }
    disabled: dict[str, DisabledEntry] = {
        row.tenant: {"reason": row.reason, "since": row.since.astimezone(UTC).isoformat()}
        for row in session.scalars(
            select(DisabledTenant)
            .where(DisabledTenant.period.in_(sorted(set(keys.values()))))
            .order_by(DisabledTenant.tenant)
        )
        if keys.get(row.tenant) == row.period
    }
    used = approval_uses.used_approvals(session, now)
    document: StateDocument = {
        "period": period,
        # Whole milliseconds, rounded down: as_of never claims a read later than it was.
        "as_of": int(moment.timestamp()) * 1000 + moment.microsecond // 1000,
        "spend": spend,
        "disabled": disabled,
        "approvals": {"used": used},
    }
    resets = {tenant: _rfc3339(windows[tenant].end) for tenant in sorted({*spend, *disabled})}
    if resets:
        document["resets"] = resets
    health = health_state(list_health(session), config)
    if health["models"] or health["providers"]:
        document["health"] = health
    held = holds_state(session)
    if held:
        document["anomaly_holds"] = held
    return document


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
