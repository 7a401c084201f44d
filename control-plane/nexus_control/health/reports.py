"""Health reports: a probe says a model or a provider is healthy, degraded or down in a
region; the last observation per (target, region) is kept, and every change of status is
an audit event (``model_health.changed``).

A report is checked against the policy in force: the model or provider must be in its
catalog and the region in its region list; a probe token bound to a region reports for
that region only. An observation older than the one kept is ignored (reports may arrive
out of order), one from the future or older than `MAX_REPORT_AGE_S` is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, NotRequired, TypedDict

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.authoring.config import CompiledConfig
from nexus_control.store import outbox
from nexus_control.store.tables import TargetHealth

__all__ = [
    "ALL_REGIONS",
    "CLOCK_SKEW_S",
    "MAX_REASON_CHARS",
    "MAX_REPORT_AGE_S",
    "HealthEntry",
    "HealthReport",
    "HealthState",
    "HealthStatus",
    "RecordedHealth",
    "ReportRefusedError",
    "health_state",
    "list_health",
    "record_health",
]

ALL_REGIONS = "*"
"""A report without a region: the target is in this state wherever it is served."""
MAX_REASON_CHARS = 300
MAX_REPORT_AGE_S = 3600
"""A health observation this old says nothing about now."""
CLOCK_SKEW_S = 60
"""How far in the future a probe's clock may put an observation."""

_Id = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$", strict=True)
]


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


class HealthReport(BaseModel):
    """``POST /v1/health/models``: one observation of one model or provider."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: _Id | None = None
    provider: _Id | None = None
    region: _Id | None = None
    """Where it was observed; without one, everywhere (only a probe bound to no region)."""
    status: HealthStatus
    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON_CHARS)]
    observed_at: AwareDatetime

    @model_validator(mode="after")
    def _one_target(self) -> HealthReport:
        if (self.model is None) == (self.provider is None):
            raise ValueError("name exactly one of model or provider")
        return self

    @property
    def kind(self) -> str:
        return "model" if self.model is not None else "provider"

    @property
    def target(self) -> str:
        target = self.model if self.model is not None else self.provider
        assert target is not None
        return target


class ReportRefusedError(NexusError):
    """A health report names what the policy does not know, or cannot be true."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class RecordedHealth:
    kind: str
    target: str
    region: str
    status: HealthStatus
    reason: str
    observed_at: datetime
    reported_at: datetime
    reporter: str
    changed: bool = False
    """The status differs from the one kept before (an audit event was recorded)."""
    applied: bool = True
    """False when a newer observation was already kept (this one changed nothing)."""


class HealthEntry(TypedDict):
    status: str
    reason: str
    since: str
    """When the status was observed (ISO 8601, UTC)."""


class HealthState(TypedDict):
    """``data.nexus_state.health``: only what is not healthy, per target, per region."""

    models: dict[str, dict[str, HealthEntry]]
    providers: dict[str, dict[str, HealthEntry]]
    regions: NotRequired[list[str]]


def _check(
    report: HealthReport, config: CompiledConfig, bound_region: str | None, now: datetime
) -> str:
    if report.model is not None and report.model not in config["models"]:
        raise ReportRefusedError("unknown_model", f"unknown model {report.model!r}")
    if report.provider is not None:
        providers = {m["provider"] for m in config["models"].values()}
        providers.update(config.get("providers", {}))
        if report.provider not in providers:
            raise ReportRefusedError("unknown_provider", f"unknown provider {report.provider!r}")
    region = report.region or ALL_REGIONS
    if report.region is not None and report.region not in config["regions"]:
        raise ReportRefusedError("unknown_region", f"unknown region {report.region!r}")
    if bound_region is not None and region != bound_region:
        raise ReportRefusedError(
            "region_not_bound",
            f"this probe reports for region {bound_region!r} only, not {region!r}",
            403,
        )
    if report.observed_at > now + timedelta(seconds=CLOCK_SKEW_S):
        raise ReportRefusedError(
            "observed_in_future", f"observed_at {report.observed_at.isoformat()} is in the future"
        )
    if report.observed_at < now - timedelta(seconds=MAX_REPORT_AGE_S):
        raise ReportRefusedError(
            "observation_stale",
            f"observed_at {report.observed_at.isoformat()} is more than {MAX_REPORT_AGE_S} s old",
        )
    return region


def record_health(
    session: Session,
    config: CompiledConfig,
    report: HealthReport,
    *,
    reporter: str,
    bound_region: str | None,
    now: datetime | None = None,
) -> RecordedHealth:
    """Keep ``report`` if it is the newest observation of its target and region.

    Raises `ReportRefusedError` for a target or region the policy does not know, a
    region the probe is not bound to, or an impossible time.
    """
    now = now or datetime.now(UTC)
    region = _check(report, config, bound_region, now)
    observed = report.observed_at.astimezone(UTC)
    row = session.get(TargetHealth, (report.kind, report.target, region))
    if row is not None and row.observed_at >= observed:
        return _recorded(row, applied=False)
    previous = row.status if row is not None else HealthStatus.HEALTHY.value
    if row is None:
        row = TargetHealth(kind=report.kind, target=report.target, region=region)
        session.add(row)
    row.status = report.status.value
    row.reason = report.reason
    row.observed_at = observed
    row.reported_at = now
    row.reporter = reporter
    changed = previous != report.status.value
    if changed:
        outbox.record(
            session,
            "model_health.changed",
            reporter,
            kind=report.kind,
            target=report.target,
            region=region,
            previous=previous,
            status=report.status.value,
            reason=report.reason,
            observed_at=observed.isoformat(),
        )
    return _recorded(row, changed=changed)


def _recorded(row: TargetHealth, *, changed: bool = False, applied: bool = True) -> RecordedHealth:
    return RecordedHealth(
        kind=row.kind,
        target=row.target,
        region=row.region,
        status=HealthStatus(row.status),
        reason=row.reason,
        observed_at=row.observed_at,
        reported_at=row.reported_at,
        reporter=row.reporter,
        changed=changed,
        applied=applied,
    )


def list_health(session: Session) -> list[RecordedHealth]:
    rows = session.scalars(
        select(TargetHealth).order_by(TargetHealth.kind, TargetHealth.target, TargetHealth.region)
    )
    return [_recorded(row) for row in rows]


def health_state(rows: Iterable[RecordedHealth], config: CompiledConfig | None) -> HealthState:
    """The state bundle's health: degraded and down targets the policy in force knows."""
    state: HealthState = {"models": {}, "providers": {}}
    known_models = config["models"] if config is not None else {}
    for row in rows:
        if row.status is HealthStatus.HEALTHY:
            continue
        if row.kind == "model" and row.target not in known_models:
            continue
        section = state["models"] if row.kind == "model" else state["providers"]
        section.setdefault(row.target, {})[row.region] = {
            "status": row.status.value,
            "reason": row.reason,
            "since": row.observed_at.astimezone(UTC).isoformat(),
        }
    return state
