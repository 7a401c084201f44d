"""What the control plane's routes answer: one pydantic model per answer.

Every route names its model with ``response_model=``, so ``/openapi.json``
describes every answer; the models read ORM rows and domain objects directly
(``from_attributes``), so no route hand-writes a dictionary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nexus_control.access.keyring import (
    DEFAULT_ROTATION_WINDOW_S,
    MAX_ROTATION_WINDOW_S,
    KeyPurpose,
    KeyState,
)
from nexus_control.authoring.diff import Change, Effect, ModuleChange, PolicyDiff
from nexus_control.budgets.costs import CostReport
from nexus_control.budgets.money import usd_string
from nexus_control.budgets.overview import CapState, SpendOverview
from nexus_control.rollout.changes import DiffPage
from nexus_control.rollout.states import EnforcerState, RolloutState
from nexus_runtime.keys.algorithms import Algorithm

__all__ = [
    "AnomalyView",
    "ApprovalRequest",
    "BudgetOverview",
    "BundleDetail",
    "BundleList",
    "BundleSummary",
    "ControlEventList",
    "ControlEventView",
    "DailySpendView",
    "DiffChangeView",
    "DiffPageView",
    "DiffSummaryView",
    "EnforcerBundleView",
    "EnforcerList",
    "EnforcerRegistrationRequest",
    "EnforcerStatusView",
    "EnforcerView",
    "GateOverride",
    "HealthList",
    "HealthRecorded",
    "KeyActivation",
    "KeyList",
    "KeyRotation",
    "KeyView",
    "Promotion",
    "PublishResult",
    "Reason",
    "RegionStatusView",
    "RegisteredEnforcer",
    "RemovedEnforcer",
    "RolloutBrief",
    "RolloutDetail",
    "RolloutHistoryEntry",
    "RolloutList",
    "RolloutStatusView",
    "RolloutView",
    "ShadowList",
    "ShadowRequest",
    "ShadowView",
    "SpendCapView",
    "SpendReport",
    "SpendRowView",
    "TargetHealthView",
    "TenantSpendView",
    "ToolApprovalIssued",
    "UsageResult",
]


class _Answer(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class _Ask(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bundles --------------------------------------------------------------------------


class BundleSummary(_Answer):
    revision: str
    bundle: str
    sha256: str
    size: int
    git_commit: str | None
    author: str
    published_at: datetime


class BundleDetail(BundleSummary):
    manifest: dict[str, Any]


class BundleList(_Answer):
    revisions: list[BundleSummary]


class RolloutBrief(_Answer):
    id: int
    state: RolloutState
    needs_approval: bool
    reason: str | None = None
    """Why the rollout is held (its replay gate's failed gates), when it is."""


class PublishResult(_Answer):
    revision: str
    bundle: str
    created: bool
    git_commit: str | None
    rollout: RolloutBrief
    diff: PolicyDiff


# --- rollouts ---------------------------------------------------------------------------


class RolloutView(_Answer):
    id: int
    revision: str
    base_revision: str | None
    state: RolloutState
    wave: int
    needs_approval: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    reason: str | None


class RolloutList(_Answer):
    rollouts: list[RolloutView]


class RolloutHistoryEntry(_Answer):
    at: datetime
    actor: str
    action: str
    region: str | None
    detail: str | None


class RolloutDetail(RolloutView):
    diff: PolicyDiff
    history: list[RolloutHistoryEntry]


class DiffChangeView(Change):
    ordinal: int
    """Its place in the page order (widening first); a cursor for ``after`` / ``before``."""


class DiffSummaryView(_Answer):
    total: int
    counts: dict[Effect, int]
    by_area: dict[str, dict[str, int]]
    """Area → effect → how many changes."""
    modules: list[ModuleChange]
    widens: bool
    code_changed: bool


class DiffPageView(_Answer):
    """One page of a rollout's data changes; follow ``next_after`` / ``previous_before``."""

    rollout_id: int
    effect: Effect | None
    limit: int
    position: int
    """How many of the selected changes precede this page."""
    of: int
    """How many changes the effect filter selects (all of them without one)."""
    changes: list[DiffChangeView]
    next_after: int | None
    previous_before: int | None
    summary: DiffSummaryView

    @classmethod
    def of_page(cls, page: DiffPage) -> DiffPageView:
        found = page.summary
        return cls(
            rollout_id=page.rollout_id,
            effect=page.query.effect,
            limit=page.query.limit,
            position=page.position,
            of=page.of,
            changes=[DiffChangeView(ordinal=n, **c.model_dump()) for n, c in page.changes],
            next_after=page.next_after,
            previous_before=page.previous_before,
            summary=DiffSummaryView(
                total=found.total,
                counts=dict(found.counts),
                by_area={a: dict(e) for a, e in found.by_area.items()},
                modules=list(found.modules),
                widens=found.widens,
                code_changed=bool(found.modules),
            ),
        )


class EnforcerStatusView(_Answer):
    id: str
    state: EnforcerState
    active_revision: str | None
    held_revision: str | None
    error: str | None
    last_seen_at: datetime | None


class RegionStatusView(_Answer):
    region: str
    wave: int
    desired: str | None
    last_good: str | None
    convergence: float
    enforcers: list[EnforcerStatusView]


class RolloutStatusView(_Answer):
    rollout: RolloutView | None
    regions: list[RegionStatusView]


class Reason(_Ask):
    reason: str | None = Field(default=None, max_length=1000)


class Promotion(_Ask):
    force: bool = False


class ShadowRequest(_Ask):
    region: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    revision: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str | None = Field(default=None, max_length=1000)


class ShadowView(_Answer):
    region: str
    revision: str
    active_revision: str | None
    since: datetime


class ShadowList(_Answer):
    shadows: list[ShadowView]


class ShadowReportView(BaseModel):
    """A region's shadow outcomes for its candidate, in the replay report's shape (``report`` is
    its canonical JSON, kind ``shadow_report``), judged by the fleet's shadow gates."""

    region: str
    candidate: str
    active_revision: str | None
    since: datetime
    report: str
    digest: str
    gates_passed: bool | None
    """None: the fleet file declares no shadow gates."""
    gates: list[GateResultModel]


class ApprovalRequest(_Ask):
    comment: str | None = Field(default=None, max_length=1000)


class GateOverride(_Ask):
    reason: str | None = Field(default=None, max_length=1000)
    """Why the approver releases a rollout its failing replay gate holds (kept as evidence;
    required: an override without one is refused, 422)."""


# --- fleet ---------------------------------------------------------------------------------


class EnforcerBundleView(_Answer):
    held_revision: str | None
    active_revision: str | None
    activated_at: datetime | None
    error: str | None


class EnforcerView(_Answer):
    id: str
    region: str
    last_seen_at: datetime
    bundles: dict[str, EnforcerBundleView]


class EnforcerList(_Answer):
    enforcers: list[EnforcerView]


class RemovedEnforcer(_Answer):
    removed: str


class EnforcerRegistrationRequest(_Ask):
    """An operator declares an enforcer (or declares it again after a removal)."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    region: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")


class RegisteredEnforcer(_Answer):
    id: str
    region: str
    changed: bool
    """False: it was already declared there (nothing was recorded)."""


# --- keys ----------------------------------------------------------------------------------


class KeyView(_Answer):
    kid: str
    purpose: KeyPurpose
    algorithm: Algorithm
    state: KeyState
    public_pem: str
    retire_after: datetime | None


class KeyList(_Answer):
    keys: list[KeyView]
    """Every key, retired ones too; enforcers trust those in ``next``, ``active``, ``retiring``."""
    approval_jwks: str
    """The public JWKS bundles carry to verify tool approvals (what local builds compile in)."""


class KeyRotation(_Ask):
    algorithm: Algorithm | None = None
    """Default: the purpose's configured algorithm (approvals: always ES256)."""


class KeyActivation(_Ask):
    window_seconds: int = Field(default=DEFAULT_ROTATION_WINDOW_S, ge=0, le=MAX_ROTATION_WINDOW_S)
    """How long the key it replaces stays trusted."""


# --- budgets -------------------------------------------------------------------------------


class SpendCapView(_Answer):
    spend_usd: float
    cap_usd: float | None


class TenantSpendView(_Answer):
    tenant: str
    name: str
    plan: str
    spend_usd: float
    cap_usd: float
    soft_cap_ratio: float
    ratio: float
    state: CapState
    on_hard_cap: str
    disabled_reason: str | None
    models: dict[str, SpendCapView]
    features: dict[str, SpendCapView]


class DailySpendView(_Answer):
    day: str
    total_usd: float
    models: dict[str, float]
    features: dict[str, float]
    endpoints: dict[str, float]


class AnomalyView(_Answer):
    day: str
    tenant: str
    kind: str
    """spike (one day, or one hour) or drift (the last week's level)"""
    spend_usd: float
    baseline_usd: float
    scope: str
    """platform, tenant, model, feature (the tenant's daily spend on one) or hour"""
    model: str | None = None
    feature: str | None = None
    hour: str | None = None
    """the UTC hour (YYYY-MM-DDTHH) of an hourly spike"""


class BudgetOverview(_Answer):
    period: str
    in_force: bool
    total_usd: float
    tenants: list[TenantSpendView]
    daily: list[DailySpendView]
    anomalies: list[AnomalyView]

    @classmethod
    def of(cls, overview: SpendOverview) -> BudgetOverview:
        def caps(values: dict[str, tuple[float, float | None]]) -> dict[str, SpendCapView]:
            return {k: SpendCapView(spend_usd=s, cap_usd=c) for k, (s, c) in values.items()}

        return cls(
            period=overview.period,
            in_force=overview.in_force,
            total_usd=round(overview.total_usd, 6),
            tenants=[
                TenantSpendView.model_validate(
                    {**vars(t), "models": caps(t.models), "features": caps(t.features)}
                )
                for t in overview.tenants
            ],
            daily=[
                DailySpendView(
                    day=day,
                    total_usd=round(t.total, 6),
                    models=t.models,
                    features=t.features,
                    endpoints=t.endpoints,
                )
                for day, t in sorted(overview.daily.items())
            ],
            anomalies=[AnomalyView.model_validate(a) for a in overview.anomalies],
        )


class SpendRowView(_Answer):
    bucket: str
    """The hour (``YYYY-MM-DDTHH``) or day (``YYYY-MM-DD``), UTC."""
    start: datetime
    group: dict[str, str | None]
    """Per group_by key, its value; null: the usage reports named no feature or route."""
    spend_micro_usd: int
    spend_usd: str
    """The same amount as an exact decimal string (six places)."""


class SpendReport(_Answer):
    """``GET /v1/budgets/spend``: exact spend per bucket of ``[from, to)``."""

    tenant: str | None
    tenants: list[str]
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: str
    group_by: list[str]
    total_micro_usd: int
    total_usd: str
    rows: list[SpendRowView]

    @classmethod
    def of(cls, report: CostReport, tenant: str | None) -> SpendReport:
        query = report.query
        return cls.model_validate(
            {
                "tenant": tenant,
                "tenants": list(report.tenants),
                "from": query.start,
                "to": query.end,
                "granularity": query.granularity.value,
                "group_by": list(query.group_by),
                "total_micro_usd": report.total_micros,
                "total_usd": usd_string(report.total_micros),
                "rows": [
                    SpendRowView(
                        bucket=row.bucket,
                        start=row.start,
                        group=dict(row.group),
                        spend_micro_usd=row.micros,
                        spend_usd=usd_string(row.micros),
                    )
                    for row in report.rows
                ],
            }
        )


# --- gateway, approvals, events ----------------------------------------------------------


class UsageResult(_Answer):
    counted: bool
    tenant: str
    period: str
    ratio: float | None
    """Spend ÷ cap in the budget window the report was charged to."""
    disabled: bool
    window: str = ""
    """That window's key (`nexus_control.budgets.window`): ``2026-03``, ``2026-W10``, …"""


class ToolApprovalIssued(_Answer):
    token: str
    token_id: str
    args_sha256: str
    expires_at: datetime


class ApprovalUseRecorded(_Answer):
    approval_id: str
    tenant: str
    tool: str
    first_use: bool
    """False when the approval had been reported used already (a replay, audited)."""
    used_at: datetime
    expires_at: datetime


class TargetHealthView(_Answer):
    kind: str
    """``model`` or ``provider``."""
    target: str
    region: str
    """``*``: every region."""
    status: str
    reason: str
    observed_at: datetime
    reported_at: datetime
    reporter: str


class HealthRecorded(TargetHealthView):
    changed: bool
    """The status changed: the state bundle was republished and the change audited."""
    applied: bool
    """False when a newer observation was already kept; this one changed nothing."""


class HealthList(_Answer):
    targets: list[TargetHealthView]


class ControlEventView(_Answer):
    id: int
    type: str = Field(validation_alias="event_type")
    actor: str
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None


class ControlEventList(_Answer):
    events: list[ControlEventView]


# --- replay ---------------------------------------------------------------------------

MAX_REPLAY_ARCHIVE_B64 = 48 * 1024 * 1024
"""Largest base64 candidate archive a replay request carries."""


class ReplayRequest(BaseModel):
    """A candidate (a published revision, or a built archive in base64) and what to replay."""

    model_config = ConfigDict(extra="forbid")

    candidate_revision: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    candidate_archive: str | None = Field(default=None, max_length=MAX_REPLAY_ARCHIVE_B64)
    baseline: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    """A named baseline revision; unset: each decision's own revision."""
    since: datetime | None = None
    """Default: the fleet's gate window (or 24 h) before ``until``."""
    until: datetime | None = None
    """Default: now."""
    tenant: str | None = Field(default=None, min_length=1, max_length=128)
    route: str | None = Field(default=None, min_length=1, max_length=512)
    tool: str | None = Field(default=None, min_length=1, max_length=128)
    sample: float | None = Field(default=None, gt=0, le=1)
    limit: int | None = Field(default=None, ge=1, le=1_000_000)


class ReplaySideTiming(BaseModel):
    p50_ns: int | None
    p99_ns: int | None


class ReplayTiming(BaseModel):
    baseline: ReplaySideTiming
    candidate: ReplaySideTiming
    wall_s: float
    decisions_per_s: float


class GateResultModel(BaseModel):
    gate: str
    passed: bool
    observed: float
    limit: float
    note: str | None = None


class ReplayResult(BaseModel):
    """The signed report (``report`` is its exact canonical JSON), timing and gate verdict."""

    report: str
    digest: str
    signature: str
    timing: ReplayTiming
    gates_passed: bool | None
    """None: the fleet file declares no gates."""
    gates: list[GateResultModel]
