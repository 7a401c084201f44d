"""Spend against caps: the cost dashboard's data."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from nexus_control.api.deps import BudgetReaderDep, PlaneDep
from nexus_control.api.models import BudgetOverview

__all__ = ["PERIOD_PATTERN", "get_budgets", "router"]

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


@router.get("", response_model=BudgetOverview)
async def get_budgets(
    plane: PlaneDep,
    _: BudgetReaderDep,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
) -> BudgetOverview:
    """Each tenant's spend in ``period`` (``YYYY-MM``, default this month) against its caps,
    all tenants' spend per day by model, feature and endpoint, and anomalies."""
    return BudgetOverview.of(await asyncio.to_thread(plane.budgets.overview, period))
