"""What the audit routes answer, as pydantic models (so ``/openapi.json`` describes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AppendAnswer",
    "ConsistencyProofAnswer",
    "ControlCoverageAnswer",
    "CoverageAnswer",
    "DecisionAnswer",
    "DecisionDetailAnswer",
    "DecisionPageAnswer",
    "ErasureAnswer",
    "ErasureRequestAnswer",
    "ErasureRequestsAnswer",
]


class _Answer(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class AppendAnswer(_Answer):
    accepted: int
    duplicates: int
    size: int
    """The tree size after the upload."""
    flagged: int = 0
    """Decisions stored flagged (time outside the window, unknown tenant)."""


class ConsistencyProofAnswer(_Answer):
    old_size: int
    new_size: int
    old_root: str
    """Base64 root hash of tree ``old_size``."""
    new_root: str
    proof: list[str]
    """The RFC 9162 consistency proof, base64 hashes in order."""
    old_checkpoint: str | None
    new_checkpoint: str


class FrameworkAnswer(_Answer):
    key: str
    name: str
    edition: str


class PeriodAnswer(_Answer):
    since: str
    until: str


class CoverageSummary(_Answer):
    controls: int
    with_evidence: int
    without_evidence: int
    decisions: int


class ControlCoverageAnswer(_Answer):
    id: str
    qualified_id: str
    group: str
    title: str
    decisions: int
    allowed: int
    denied: int
    events: int


class CoverageAnswer(_Answer):
    framework: FrameworkAnswer
    period: PeriodAnswer
    summary: CoverageSummary
    controls: list[ControlCoverageAnswer]
    without_evidence: list[str]


class ErasureAnswer(_Answer):
    request_id: str
    tenant: str
    scope: str
    keys_destroyed: int
    payloads_erased: int
    requested_by: str
    approved_by: str
    event_id: str
    event_index: int
    compacted: bool


class ErasureRequestAnswer(_Answer):
    id: str
    tenant: str
    scope: str
    state: str
    requested_by: str
    requested_at: datetime
    reference: str | None
    decided_by: str | None = None
    event_index: int | None = None


class ErasureRequestsAnswer(_Answer):
    requests: list[ErasureRequestAnswer]


class DecisionAnswer(_Answer):
    index: int
    decision_id: str
    time: datetime
    tenant: str
    region: str
    enforcer: str
    method: str
    route: str
    tool: str | None
    allowed: bool
    http_status: int | None
    controls: list[str]
    bundles: dict[str, str]
    error: str | None
    shed: str | None = None
    receipt: str | None = None
    """Why the enforcer's delivery receipt says the client did not get this answer, or
    ``shed_answer_delivered``: it did get a shed refusal its leaf presumed lost."""
    answered: bool = True
    """False for a shed Check Envoy gave up on, or an answer a receipt marks undelivered."""


class DecisionPageAnswer(_Answer):
    decisions: list[DecisionAnswer]
    next_before: int | None
    """Pass as ``before`` for the next page; null on the last one."""
    indexed_size: int
    """Leaves below this index are searchable; newer ones are being indexed."""
    size: int


class DecisionDetailAnswer(_Answer):
    decision: DecisionAnswer
    entry: str
    """The leaf's canonical entry, exactly as hashed."""
    payload_status: str
    """present, erased (its key destroyed) or purged (past retention)."""
    payload: dict[str, Any] | None
    proof: str
    """C2SP tlog-proof of the leaf against the latest checkpoint."""
