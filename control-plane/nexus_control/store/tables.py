"""The control plane's database schema (SQLAlchemy 2), one class per table.

Alembic migrations in ``migrations/`` create and evolve these tables; the
application never calls ``create_all``. Times are UTC. Secrets (tokens) are
stored only as SHA-256 hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from nexus_control.rollout.states import RolloutState

__all__ = [
    "AnomalyHold",
    "ApiToken",
    "Approval",
    "Base",
    "BundleRevision",
    "ConsoleSession",
    "DisabledTenant",
    "Enforcer",
    "EnforcerBundle",
    "EnforcerRegistration",
    "Evaluation",
    "KeyRecord",
    "OutboxEvent",
    "Principal",
    "RegionTarget",
    "Rollout",
    "RolloutChange",
    "RolloutDiffSummary",
    "RolloutEvent",
    "StateBundle",
    "TargetHealth",
    "UtcDateTime",
]


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every database.

    SQLite keeps no time zone; values are stored as UTC and come back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the control plane stores aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class BundleRevision(Base):
    """An immutable, content-addressed bundle revision, built here from published sources.

    ``content`` is the bundle's files without a signature; ``archive`` is the
    signed bundle enforcers download, written once, when the revision is
    approved (or at once when it needs no second approver). A revision is
    never served unsigned: it reaches a region only through an approval.
    """

    __tablename__ = "bundle_revisions"

    revision: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle: Mapped[str] = mapped_column(String(64), index=True)
    archive: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The signed archive; None until the revision is approved."""
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The unsigned archive the control plane built (None for revisions published before 0004)."""
    sources: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The sources tarball the author published."""
    sources_sha256: Mapped[str | None] = mapped_column(String(64))
    signed_by: Mapped[str | None] = mapped_column(String(128))
    """The key id that signed ``archive``."""
    signed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    """The bundle's ``data.nexus.config``: caps for spend, the base of diffs."""
    git_commit: Mapped[str | None] = mapped_column(String(80))
    author: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime())


class KeyRecord(Base):
    """A signing key of the control plane's key ring: where it lives and where it is in its life.

    Only the public half is stored; the private half stays in its provider
    (a file, a token) under ``reference``.
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(500))
    public_pem: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    retire_after: Mapped[datetime | None] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RegionTarget(Base):
    """Which revision a region should run, and the last one it ran well."""

    __tablename__ = "region_targets"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle: Mapped[str] = mapped_column(String(64), primary_key=True)
    desired_revision: Mapped[str] = mapped_column(ForeignKey("bundle_revisions.revision"))
    last_good_revision: Mapped[str | None] = mapped_column(ForeignKey("bundle_revisions.revision"))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StateBundle(Base):
    """The latest signed state bundle (spend ratios, disabled tenants); one row per name."""

    __tablename__ = "state_bundles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[str] = mapped_column(String(64))
    archive: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[dict[str, Any]]
    built_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Principal(Base):
    """Who holds tokens: an immutable id, and a name unique by its folded form."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ToolApproval(Base):
    """An approval the control plane issued, and its one use once the gateway reports it.

    Rows live until their approval expires (plus the clock-skew grace); the
    used ones are what the state bundle lists as spent.
    """

    __tablename__ = "tool_approvals"

    token_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))
    args_sha256: Mapped[str] = mapped_column(String(64))
    approver: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    used_by: Mapped[str | None] = mapped_column(String(200))
    decision_id: Mapped[str | None] = mapped_column(String(128))


class ApiToken(Base):
    """A bearer credential: its SHA-256, its role, and what it is bound to."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    region: Mapped[str | None] = mapped_column(String(64))
    enforcer_id: Mapped[str | None] = mapped_column(String(128))
    tenants: Mapped[list[str] | None] = mapped_column(JSON)
    """A gateway token's scope: the tenants it may report usage for."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Enforcer(Base):
    """One OPA enforcer as the control plane has seen it."""

    __tablename__ = "enforcers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class EnforcerRegistration(Base):
    """An operator's declaration of an enforcer in a region (besides the fleet file's)."""

    __tablename__ = "enforcer_registrations"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    registered_by: Mapped[str] = mapped_column(String(200))


class EnforcerBundle(Base):
    """Per enforcer and bundle: what it holds (from polls) and what it activated (from status)."""

    __tablename__ = "enforcer_bundles"

    enforcer_id: Mapped[str] = mapped_column(ForeignKey("enforcers.id"), primary_key=True)
    bundle: Mapped[str] = mapped_column(String(64), primary_key=True)
    held_revision: Mapped[str | None] = mapped_column(String(64))
    held_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    active_revision: Mapped[str | None] = mapped_column(String(64))
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    downloaded_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """OPA's last successful download: an error after it is an activation failure."""
    status_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class TargetHealth(Base):
    """The last reported health of a model or provider (``kind``) in a region (``*``: all)."""

    __tablename__ = "target_health"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(300))
    observed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reporter: Mapped[str] = mapped_column(String(200))


class AnomalyHold(Base):
    """A tenant's spend anomaly on hold: its budget's ``onAnomaly`` action applies until an
    approver releases it. One per tenant; the finding it came from is its audit event."""

    __tablename__ = "anomaly_holds"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(8))
    since: Mapped[datetime] = mapped_column(UtcDateTime())


class DisabledTenant(Base):
    """A tenant switched off for a budget period after crossing its hard cap."""

    __tablename__ = "disabled_tenants"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The budget window's key (`nexus_control.budgets.window`): ``YYYY-MM`` for a month."""
    reason: Mapped[str] = mapped_column(String(300))
    since: Mapped[datetime] = mapped_column(UtcDateTime())


class Evaluation(Base):
    """An offline evaluation result of a prompt version or a model, as an evaluator posted it.

    Never changed once stored: a newer evaluation (by ``evaluated_at``) supersedes it for
    the quality gate at publish.
    """

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    """``prompt`` or ``model``."""
    subject: Mapped[str] = mapped_column(String(64))
    """The prompt id or the model id."""
    version: Mapped[str | None] = mapped_column(String(40))
    """The prompt's version; None for a model."""
    safety_score: Mapped[float] = mapped_column(Float)
    hallucination_rate: Mapped[float] = mapped_column(Float)
    p95_latency_ms: Mapped[float] = mapped_column(Float)
    cost_per_call_usd: Mapped[float] = mapped_column(Float)
    dataset_id: Mapped[str] = mapped_column(String(128))
    dataset_size: Mapped[int] = mapped_column(Integer)
    evaluated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    evaluator: Mapped[str] = mapped_column(String(200))
    evaluator_principal: Mapped[str] = mapped_column(String(36))

    __table_args__ = (
        Index("ix_evaluations_subject", "kind", "subject", "version", "evaluated_at"),
    )


class OutboxEvent(Base):
    """A change to be recorded in the audit log, written in the change's transaction."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_outbox_undelivered", "delivered_at", "id"),)


class Rollout(Base):
    """One revision's journey across the waves of regions."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bundle: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(ForeignKey("bundle_revisions.revision"))
    base_revision: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[RolloutState] = mapped_column(
        Enum(
            RolloutState,
            native_enum=False,
            length=32,
            validate_strings=True,
            values_callable=lambda states: [s.value for s in states],
        ),
        index=True,
    )
    wave: Mapped[int] = mapped_column(Integer)
    wave_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    wave_converged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    needs_approval: Mapped[bool]
    diff: Mapped[dict[str, Any]] = mapped_column(deferred=True)
    """The whole `PolicyDiff` as JSON: megabytes for a big first publication, so read only
    when asked for (`engine.get` / `engine.recent` with ``diff``); pages of it are in
    `RolloutChange`."""
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_principal: Mapped[str | None] = mapped_column(String(36))
    """The author's principal id: separation of duties compares this, never the name."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reason: Mapped[str | None] = mapped_column(Text)


class RolloutChange(Base):
    """One data change of a rollout's diff, as the rollout page lists it.

    Ordinals follow the page's order, not the diff's: widening changes first,
    then narrowing, then neutral, each in the diff's order (area, subject,
    detail). So one effect's changes are one range of ordinals (where it
    starts is in the summary), and a page of any of them is a range scan of
    the primary key.
    """

    __tablename__ = "rollout_changes"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    effect: Mapped[str] = mapped_column(String(16))
    area: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)


class RolloutDiffSummary(Base):
    """A rollout's diff without its data rows: counts by effect and by area, and its modules.

    Written with the rollout's `RolloutChange` rows, in the same transaction.
    """

    __tablename__ = "rollout_diff_summaries"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    widens: Mapped[int] = mapped_column(Integer)
    narrows: Mapped[int] = mapped_column(Integer)
    neutral: Mapped[int] = mapped_column(Integer)
    by_area: Mapped[dict[str, Any]]
    """Area → effect → how many changes."""
    modules: Mapped[list[Any]]
    """The diff's Rego module changes, as `ModuleChange` JSON."""


class RolloutEvent(Base):
    """The rollout history: who did what, when and why."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    region: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class Approval(Base):
    """A second person's approval of a publication."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    approver: Mapped[str] = mapped_column(String(200))
    approver_principal: Mapped[str | None] = mapped_column(String(36))
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsoleSession(Base):
    """A signed-in console session: only the SHA-256 of its cookie is stored.

    It speaks for the API token it was opened with, so revoking the token ends
    it; it ends at ``expires_at``, after ``idle`` without a request, or at logout.
    """

    __tablename__ = "console_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
