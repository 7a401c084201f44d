"""Spend against caps (the cost dashboard's data), exact spend over time (the cost API), and
spend anomalies on hold (a tenant's ``onAnomaly`` action until an approver releases it)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi import Query as QueryParam
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nexus_control.api.deps import (
    ApproverDep,
    BudgetReaderDep,
    PlaneDep,
    SpendReaderDep,
    spend_scope,
)
from nexus_control.api.models import BudgetOverview, SpendReport
from nexus_control.budgets.costs import parse_query
from nexus_control.budgets.holds import MAX_RELEASE_REASON, NoHoldError
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = [
    "PERIOD_PATTERN",
    "TENANT_PATTERN",
    "get_budgets",
    "get_spend",
    "list_anomaly_holds",
    "release_anomaly_hold",
    "router",
]

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
TENANT_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"
_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "A bad range, granularity or group_by key (the message says which)"},
    403: {"description": "The token's role, or its tenants, do not cover the tenant asked for"},
}


@router.get("", response_model=BudgetOverview)
async def get_budgets(
    plane: PlaneDep,
    _: BudgetReaderDep,
    period: Annotated[str | None, QueryParam(pattern=PERIOD_PATTERN)] = None,
) -> BudgetOverview:
    """Each tenant's spend in ``period`` (``YYYY-MM``, default this month) against its caps,
    all tenants' spend per day by model, feature and endpoint, and anomalies."""
    return BudgetOverview.of(await asyncio.to_thread(plane.budgets.overview, period))


@router.get("/spend", response_model=SpendReport, responses=_ERRORS)
async def get_spend(
    plane: PlaneDep,
    reader: SpendReaderDep,
    start: Annotated[
        str,
        QueryParam(
            alias="from",
            max_length=40,
            description="Start (inclusive): a date or an RFC 3339 time on a bucket boundary",
        ),
    ],
    end: Annotated[
        str,
        QueryParam(
            alias="to",
            max_length=40,
            description="End (exclusive): a date or an RFC 3339 time on a bucket boundary",
        ),
    ],
    tenant: Annotated[str | None, QueryParam(pattern=TENANT_PATTERN)] = None,
    granularity: Annotated[str, QueryParam(max_length=20, description="hour or day")] = "day",
    group_by: Annotated[
        str | None,
        QueryParam(max_length=100, description="Comma-separated: tenant, model, feature, route"),
    ] = None,
) -> SpendReport:
    """Exact spend per hour or UTC day of ``[from, to)``, grouped by tenant, model, feature
    and route, in micro-dollars and as a decimal USD string; it reconciles exactly with the
    usage reports counted and the month's total the budget uses.

    Operators and compliance read any tenant (without ``tenant``: every tenant with spend in
    the range); a finops token reads only the tenants it names (without ``tenant``: all of
    them), and another tenant is 403. Hours are kept 8 days and days 400, so a range spans at
    most that; a bad range, granularity or group_by key is 400 with the reason.
    """
    query = parse_query(start, end, granularity, group_by)
    report = await asyncio.to_thread(
        plane.budgets.costs, query, tenant=tenant, scope=spend_scope(reader)
    )
    return SpendReport.of(report, tenant)


class AnomalyHoldView(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    day: str
    """The day of the finding that opened the hold."""
    kind: str
    since: str


class AnomalyHolds(BaseModel):
    holds: list[AnomalyHoldView]


class AnomalyRelease(BaseModel):
    """``POST /v1/budgets/anomaly-holds/{tenant}/release``: why the spend is fine."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=MAX_RELEASE_REASON)
    ] = Field(description="What the approver checked; kept in the audit log")


MAX_RELEASE_BYTES = 2 * 1024


@router.get("/anomaly-holds", response_model=AnomalyHolds)
async def list_anomaly_holds(plane: PlaneDep, _: BudgetReaderDep) -> AnomalyHolds:
    """Tenants whose spend anomaly is held: their budget's ``onAnomaly`` action applies."""
    held = await asyncio.to_thread(plane.budgets.anomaly_holds)
    return AnomalyHolds(
        holds=[AnomalyHoldView(tenant=t, **entry) for t, entry in sorted(held.items())]
    )


@router.post(
    "/anomaly-holds/{tenant}/release",
    response_model=AnomalyHoldView,
    responses={
        404: {"description": "The tenant's spend anomaly is not held"},
        400: {"description": "No reason, or a malformed body"},
    },
)
async def release_anomaly_hold(
    request: Request,
    plane: PlaneDep,
    approver: ApproverDep,
    tenant: Annotated[str, Path(pattern=TENANT_PATTERN)],
) -> AnomalyHoldView:
    """End a tenant's spend-anomaly hold (approvers only), with the reason the spend is fine;
    the state bundle is republished at once and the release is an audit event."""
    body = parse_body(
        AnomalyRelease, await read_body(request, MAX_RELEASE_BYTES), "invalid_release"
    )
    try:
        released = await asyncio.to_thread(
            plane.budgets.release_anomaly, tenant, approver.name, body.reason
        )
    except NoHoldError as missing:
        raise ApiError(404, "no_anomaly_hold", str(missing)) from missing
    return AnomalyHoldView(tenant=tenant, **released)
