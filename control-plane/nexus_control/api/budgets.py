"""Spend against caps (the cost dashboard's data), and exact spend over time (the cost API)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from nexus_control.api.deps import BudgetReaderDep, PlaneDep, SpendReaderDep, spend_scope
from nexus_control.api.models import BudgetOverview, SpendReport
from nexus_control.budgets.costs import parse_query

__all__ = ["PERIOD_PATTERN", "TENANT_PATTERN", "get_budgets", "get_spend", "router"]

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
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
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
        Query(
            alias="from",
            max_length=40,
            description="Start (inclusive): a date or an RFC 3339 time on a bucket boundary",
        ),
    ],
    end: Annotated[
        str,
        Query(
            alias="to",
            max_length=40,
            description="End (exclusive): a date or an RFC 3339 time on a bucket boundary",
        ),
    ],
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
    granularity: Annotated[str, Query(max_length=20, description="hour or day")] = "day",
    group_by: Annotated[
        str | None,
        Query(max_length=100, description="Comma-separated: tenant, model, feature, route"),
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
