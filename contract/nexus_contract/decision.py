"""The decision result: what ``data.nexus.envoy.authz.decision`` evaluates to.

One JSON Schema (``schemas/decision_result/decision-result.schema.json``) pins
the shape for every reader: the Rego tests check the library's decisions
against it (``json.match_schema``, with ``schemas/`` loaded as data), the Go
tests check the shapes our ext_authz plugin turns into Envoy responses, and
pytest checks real OPA's answers. `DecisionResult` is the typed Python view of
the same shape.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints

__all__ = [
    "DECISION_METRICS_FILE",
    "DECISION_SCHEMA_FILE",
    "SCHEMAS_DIR",
    "DecisionLabels",
    "DecisionMetrics",
    "DecisionResult",
    "Fallback",
    "Reason",
    "decision_metrics",
    "decision_schema",
]

SCHEMAS_DIR = Path(str(resources.files("nexus_contract") / "schemas"))
"""Pass this directory to ``opa test`` to have the schema at ``data.decision_result``."""
DECISION_SCHEMA_FILE = SCHEMAS_DIR / "decision_result" / "decision-result.schema.json"
DECISION_METRICS_FILE = SCHEMAS_DIR / "decision_metrics" / "decision-metrics.json"

Label = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")]


class Reason(BaseModel):
    """Why a request was refused (or which control an allow evidences)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: StrictStr
    message: StrictStr
    controls: tuple[StrictStr, ...]


class DecisionLabels(BaseModel):
    """What the enforcer's decision metrics are labelled by: bounded sets, never per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Label | None = None
    tool: Label | None = None
    capability: Label | None = None


class DecisionLogChoice(BaseModel):
    """A tenant's choice of whether its answers wait for the decision's fsync."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wait_for: Literal["fsync", "write", "none"]


class Fallback(BaseModel):
    """The fallback an allowed decision took: the routed model was unhealthy in the region."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    rule: StrictStr
    message: StrictStr
    controls: tuple[StrictStr, ...]
    from_model: Label = Field(alias="from")
    to: Label
    status: StrictStr


class DecisionResult(BaseModel):
    """The object the ext_authz plugin turns into Envoy's CheckResponse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed: StrictBool
    http_status: int = Field(ge=200, le=599)
    headers: dict[str, StrictStr]
    response_headers_to_add: dict[str, StrictStr]
    request_headers_to_remove: tuple[StrictStr, ...]
    body: StrictStr
    reasons: tuple[Reason, ...]
    dynamic_metadata: dict[str, Any] | None = None
    decision_log: DecisionLogChoice | None = None
    labels: DecisionLabels | None = None
    fallback: Fallback | None = None


@cache
def decision_schema() -> dict[str, Any]:
    """The decision result's JSON Schema (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(DECISION_SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


class DecisionMetrics(BaseModel):
    """The enforcer's decision metrics (``decision-metrics.json``), as Go exports them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    decisions_metric: str
    duration_metric: str
    tenant_decisions_metric: str
    duration_buckets_s: tuple[float, ...]
    outcomes: tuple[str, ...]
    unanswered_outcomes: tuple[str, ...]
    """Outcomes where the client got no decision: what an availability objective counts."""
    no_value: str
    overflow_value: str
    max_values_per_label: int


@cache
def decision_metrics() -> DecisionMetrics:
    """The names, buckets and label rules of the enforcer's decision metrics."""
    return DecisionMetrics.model_validate_json(DECISION_METRICS_FILE.read_bytes())
