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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

__all__ = [
    "DECISION_SCHEMA_FILE",
    "SCHEMAS_DIR",
    "DecisionResult",
    "Reason",
    "decision_schema",
]

SCHEMAS_DIR = Path(str(resources.files("nexus_contract") / "schemas"))
"""Pass this directory to ``opa test`` to have the schema at ``data.decision_result``."""
DECISION_SCHEMA_FILE = SCHEMAS_DIR / "decision_result" / "decision-result.schema.json"


class Reason(BaseModel):
    """Why a request was refused (or which control an allow evidences)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: StrictStr
    message: StrictStr
    controls: tuple[StrictStr, ...]


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


@cache
def decision_schema() -> dict[str, Any]:
    """The decision result's JSON Schema (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(DECISION_SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema
