"""Decision search and lookup: the routes the console's decision pages read through.

========  ==============================  ================================
GET       /v1/audit/decisions             compliance, operator (search)
GET       /v1/audit/decisions/{id}        compliance, operator (one, in full)
========  ==============================  ================================
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from nexus_audit.api.models import DecisionAnswer, DecisionDetailAnswer, DecisionPageAnswer
from nexus_audit.api.routes import Caller, LogDep, require
from nexus_audit.search import DecisionHit, parse_query

__all__ = ["MAX_DECISION_ID", "SearcherDep", "decision", "router", "search"]

router = APIRouter(tags=["audit"])

MAX_DECISION_ID = 128
SearcherDep = Annotated[Caller, Depends(require("compliance", "operator"))]
"""Who may search decisions: who may ask for their proofs."""


def answer(hit: DecisionHit) -> DecisionAnswer:
    return DecisionAnswer.model_validate(
        {
            **asdict(hit),
            "controls": list(hit.controls),
            "bundles": dict(hit.bundles),
            "answered": hit.answered,
        }
    )


@router.get("/v1/audit/decisions", response_model=DecisionPageAnswer)
async def search(request: Request, log: LogDep, _: SearcherDep) -> DecisionPageAnswer:
    """Decisions by time (``since``, ``until``), ``tenant``, ``outcome`` (allowed, denied),
    ``route``, ``tool``, ``rule``, ``control`` (qualified) and ``decision_id``, newest first;
    ``before`` and ``limit`` page."""
    query = parse_query(dict(request.query_params))
    page = await asyncio.to_thread(log.search_decisions, query)
    return DecisionPageAnswer(
        decisions=[answer(hit) for hit in page.hits],
        next_before=page.next_before,
        indexed_size=page.indexed_size,
        size=page.size,
    )


@router.get("/v1/audit/decisions/{decision_id}", response_model=DecisionDetailAnswer)
async def decision(
    decision_id: Annotated[str, Path(min_length=1, max_length=MAX_DECISION_ID)],
    log: LogDep,
    _: SearcherDep,
) -> DecisionDetailAnswer:
    """One decision: its entry, its payload when readable, and its inclusion proof."""
    record = await asyncio.to_thread(log.decision_record, decision_id)
    return DecisionDetailAnswer(
        decision=answer(record.hit),
        entry=record.entry.decode(),
        payload_status=record.payload_status.value,
        payload=dict(record.payload) if record.payload is not None else None,
        proof=record.proof.encode(),
    )
