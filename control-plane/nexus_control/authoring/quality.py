"""Quality thresholds of prompt versions and models, and how an evaluation meets them.

A Prompts spec's prompt, or a Rollouts spec's model flag, may declare a
``quality`` block; publishing then needs, for every version or model the
rollout routes traffic to, a stored offline evaluation that meets every
threshold the block declares (`nexus_control.authoring.traffic` says what
receives traffic; the control plane's gate reads the evaluations). A threshold
left out is not checked; a block must declare at least one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = ["MAX_DATASET_SIZE", "Measured", "Quality", "Subject", "shortfalls"]

MAX_DATASET_SIZE = 1_000_000_000
"""The largest dataset an evaluation may claim (and a threshold may ask for)."""

_Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]


class Quality(BaseModel):
    """``quality:``: what the latest evaluation of each routed version must show."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=False
    )

    min_safety_score: _Unit | None = None
    max_hallucination_rate: _Unit | None = None
    max_p95_latency_ms: _Positive | None = None
    max_cost_per_call_usd: _Positive | None = None
    min_dataset_size: Annotated[int, Field(ge=1, le=MAX_DATASET_SIZE)] | None = None

    @model_validator(mode="after")
    def _declares_a_threshold(self) -> Quality:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("a quality block declares at least one threshold")
        return self


@dataclass(frozen=True, order=True)
class Subject:
    """What an evaluation is of: a prompt's version, or a model (a model flag's variant)."""

    kind: Literal["prompt", "model"]
    id: str
    version: str | None = None

    def __str__(self) -> str:
        if self.kind == "prompt":
            return f"prompt {self.id!r} version {self.version!r}"
        return f"model {self.id!r}"


@dataclass(frozen=True)
class Measured:
    """What one stored evaluation measured of a prompt version or a model."""

    safety_score: float
    hallucination_rate: float
    p95_latency_ms: float
    cost_per_call_usd: float
    dataset_id: str
    dataset_size: int
    evaluated_at: datetime


def shortfalls(quality: Quality, measured: Measured) -> list[str]:
    """Every declared threshold ``measured`` fails, each as ``yamlName: measured vs limit``."""
    failed: list[str] = []
    checks = (
        ("minSafetyScore", quality.min_safety_score, measured.safety_score, "<"),
        ("maxHallucinationRate", quality.max_hallucination_rate, measured.hallucination_rate, ">"),
        ("maxP95LatencyMs", quality.max_p95_latency_ms, measured.p95_latency_ms, ">"),
        ("maxCostPerCallUsd", quality.max_cost_per_call_usd, measured.cost_per_call_usd, ">"),
        ("minDatasetSize", quality.min_dataset_size, measured.dataset_size, "<"),
    )
    for name, limit, value, fails_when in checks:
        if limit is None:
            continue
        if (value < limit) if fails_when == "<" else (value > limit):
            failed.append(f"{name} {limit:g}: measured {value:g}")
    return failed
