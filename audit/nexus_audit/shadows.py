"""Shadow outcomes: a decision the enforcer answered, evaluated again against a candidate.

The ext_authz plugin evaluates a sample of the Checks it answered against the
region's shadow candidate, off the request path, and logs every outcome
(unchanged ones too: a gate needs the denominator) as an event at
`SHADOW_PATH`, result in ``schemas/shadow/shadow.schema.json``, through the
durable decision log. Each is a leaf of kind ``shadow``, event id
``shadow:<decision id>``, entry ``{v, kind: "shadow", shadow_id, decision_id,
time, region, enforcer, candidate_revision, active_revision, change, active,
candidate?, error?, route?, tool?, eval_ns}``, with the decision's tenant
beside it, and is checked as every enforcer record is
(`nexus_audit.enforcer_records`): from the enforcer that made the decision
only (else `ShadowRefusedError`, 422, a security event), so no enforcer can
vouch for or against a candidate with another's traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.enforcer_records import EnforcerRecordKind, EnforcerRecordRefusedError
from nexus_audit.metrics import SHADOW_FORGED
from nexus_audit.tables import Leaf
from nexus_contract.wire import SHADOW_PATH

__all__ = [
    "SHADOWS",
    "SHADOW_FORGED",
    "ShadowLeaf",
    "ShadowOutcome",
    "ShadowRefusedError",
    "shadow_leaves",
]

_PAGE = 1000

_Text = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class ShadowRefusedError(EnforcerRecordRefusedError):
    """A shadow outcome names a decision another enforcer made."""

    code = "shadow_refused"
    security_kind = SHADOW_FORGED


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowReason(_Strict):
    rule: _Text
    controls: list[_Text] = Field(max_length=16)


class ShadowVerdict(_Strict):
    allowed: StrictBool
    http_status: StrictInt = Field(ge=200, le=599)
    reasons: list[ShadowReason] = Field(max_length=16)


class ShadowOutcome(_Strict):
    """A shadow event's result (the contract's shadow schema)."""

    decision_id: StrictStr = Field(min_length=1, max_length=128)
    candidate_revision: _Text
    active_revision: StrictStr = Field(max_length=128)
    change: Literal[
        "unchanged", "allow_to_deny", "deny_to_allow", "status_changed", "headers_changed",
        "error",
    ]  # fmt: skip
    active: ShadowVerdict
    candidate: ShadowVerdict | None = None
    error: _Text | None = None
    route: _Text | None = None
    tool: _Text | None = None
    eval_ns: StrictInt = Field(ge=0)


def _entry(outcome: ShadowOutcome) -> Mapping[str, Any]:
    return outcome.model_dump(exclude_none=True, exclude={"decision_id"})


SHADOWS = EnforcerRecordKind(
    kind="shadow",
    path=SHADOW_PATH,
    model=ShadowOutcome,
    decision_id=lambda outcome: outcome.decision_id,
    entry=_entry,
    refused=ShadowRefusedError,
)
"""Shadow outcomes as an enforcer record kind."""


@dataclass(frozen=True)
class ShadowLeaf:
    """A shadow leaf as a report reads it."""

    index: int
    tenant: str
    time: datetime
    entry: Mapping[str, Any]


def shadow_leaves(
    session: Session,
    *,
    region: str,
    candidate: str,
    since: datetime,
    until: datetime,
    limit: int,
) -> list[ShadowLeaf]:
    """The shadow leaves of ``candidate`` in ``region`` in [since, until), oldest first.

    At most ``limit`` (the report says so in its scope): a report is bounded in
    memory whatever the traffic.
    """
    rows = session.execute(
        select(Leaf.leaf_index, Leaf.tenant, Leaf.time, Leaf.entry)
        .where(Leaf.kind == SHADOWS.kind, Leaf.time >= since, Leaf.time < until)
        .order_by(Leaf.leaf_index)
        .execution_options(yield_per=_PAGE)
    ).tuples()
    found: list[ShadowLeaf] = []
    for index, tenant, time, raw in rows:
        entry = orjson.loads(raw)
        if entry.get("region") != region or entry.get("candidate_revision") != candidate:
            continue
        found.append(ShadowLeaf(index, tenant or "", time, entry))
        if len(found) >= limit:
            break
    return found
