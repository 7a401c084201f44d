"""Offline evaluation results: an evaluator posts them, the people who gate on them read them.

``POST /v1/evaluations`` takes an evaluator token only (no person posts the
evidence their own change is gated on); a body that is not exactly an
`EvaluationResult` is refused with 422 and the field at fault, one for a
prompt version or model the latest published revision does not know with
422 too, and nothing is stored. Publishing reads them
(`nexus_control.quality.evaluations.gate`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from nexus_control.api.deps import EvaluatorDep, PlaneDep, ReaderDep
from nexus_control.quality.evaluations import MAX_EVALUATION_BYTES, MAX_LISTED, EvaluationResult
from nexus_runtime.http import ApiError, read_body

__all__ = ["EvaluationList", "EvaluationView", "list_evaluations", "post_evaluation", "router"]

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])

_ID = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"
MAX_PROBLEMS = 5


class EvaluationView(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: int
    kind: str
    subject: str
    """The prompt id or the model id."""
    version: str | None
    safety_score: float
    hallucination_rate: float
    p95_latency_ms: float
    cost_per_call_usd: float
    dataset_id: str
    dataset_size: int
    evaluated_at: datetime
    recorded_at: datetime
    evaluator: str


class EvaluationList(BaseModel):
    evaluations: list[EvaluationView]


def _parse(body: bytes) -> EvaluationResult:
    if not body:
        raise ApiError(422, "invalid_evaluation", "send the evaluation as a JSON object")
    try:
        return EvaluationResult.model_validate_json(body)
    except ValidationError as exc:
        reasons = []
        for error in exc.errors()[:MAX_PROBLEMS]:
            where = ".".join(str(part) for part in error["loc"]) or "body"
            reasons.append(f"{where}: {error['msg']}")
        raise ApiError(422, "invalid_evaluation", "; ".join(reasons)) from None


@router.post(
    "",
    status_code=201,
    response_model=EvaluationView,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EvaluationResult"}}
            },
        }
    },
)
async def post_evaluation(
    request: Request, plane: PlaneDep, principal: EvaluatorDep
) -> EvaluationView:
    """Store one offline evaluation of a prompt version or a model (audited)."""
    result = _parse(await read_body(request, MAX_EVALUATION_BYTES))
    row = await asyncio.to_thread(plane.evaluations.record, result, principal)
    return EvaluationView.model_validate(row)


@router.get("", response_model=EvaluationList)
async def list_evaluations(
    plane: PlaneDep,
    _: ReaderDep,
    prompt: Annotated[str | None, Query(pattern=_ID, max_length=64)] = None,
    model: Annotated[str | None, Query(pattern=_ID, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = MAX_LISTED,
) -> EvaluationList:
    """Evaluations newest first (by ``evaluated_at``), of one prompt or model, or of all."""
    rows = await asyncio.to_thread(
        lambda: plane.evaluations.recent(prompt=prompt, model=model, limit=limit)
    )
    return EvaluationList(evaluations=[EvaluationView.model_validate(r) for r in rows])
