"""Offline evaluation results: posted by an evaluator, stored, audited, read by the gate.

An evaluation is of one prompt version (``prompt`` + ``version``) or one model
(``model``), either of which the latest published revision must know: a
result for something no bundle names is refused, not kept for later. Rows are
never changed; for each subject the latest by ``evaluated_at`` (then by
arrival) is the one `gate` judges, so a newer failing result stops the next
publication that routes traffic to it. ``evaluated_at`` may not be ahead of
the control plane's clock by more than `MAX_CLOCK_SKEW` (a result from the
future would outrank every real one). Each stored result is an
``evaluation.recorded`` event in the audit log, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.access.tokens import Principal
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.loader import SpecError
from nexus_control.authoring.quality import MAX_DATASET_SIZE, Measured, Subject
from nexus_control.authoring.traffic import QualityDemand, demands_in, judge
from nexus_control.store import outbox
from nexus_control.store.tables import BundleRevision, Evaluation
from nexus_runtime.database import Database

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_EVALUATION_BYTES",
    "MAX_LISTED",
    "EvaluationRefusedError",
    "EvaluationResult",
    "Evaluations",
    "QualityGateError",
    "QualityLapsedError",
    "UnknownSubjectError",
    "gate",
    "gate_signed",
    "latest",
]

MAX_EVALUATION_BYTES = 4 * 1024
"""The largest evaluation body: a dozen short fields."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_LISTED = 200
"""At most this many evaluations are listed, newest first."""

_Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")]
_Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,40}$")]
_DatasetId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")]
_Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class EvaluationRefusedError(NexusError):
    """A well-formed evaluation that cannot be stored as it is (its time is in the future)."""


class UnknownSubjectError(EvaluationRefusedError):
    """The evaluation is of a prompt version or model the latest published revision lacks."""


class QualityGateError(SpecError):
    """Publishing would route traffic to versions without a passing evaluation; each problem
    is placed at its route in the specs."""


class QualityLapsedError(NexusError):
    """At approval, a version the signed revision routes traffic to no longer has a passing
    latest evaluation (a newer failing one arrived after the author published)."""


class EvaluationResult(BaseModel):
    """``POST /v1/evaluations``: one offline evaluation of a prompt version or a model."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: _Id | None = None
    version: _Version | None = None
    """The prompt's version (with ``prompt`` only)."""
    model: _Id | None = None
    safety_score: _Unit
    """0..1, higher is safer."""
    hallucination_rate: _Unit
    """0..1, the share of answers with a hallucination."""
    p95_latency_ms: Annotated[float, Field(ge=0, le=3_600_000, allow_inf_nan=False)]
    cost_per_call_usd: Annotated[float, Field(ge=0, le=1_000, allow_inf_nan=False)]
    dataset_id: _DatasetId
    dataset_size: Annotated[int, Field(ge=1, le=MAX_DATASET_SIZE)]
    evaluated_at: AwareDatetime = Field(strict=False)

    @model_validator(mode="after")
    def _one_subject(self) -> EvaluationResult:
        if (self.prompt is None) == (self.model is None):
            raise ValueError("name exactly one of prompt (with its version) or model")
        if self.prompt is not None and self.version is None:
            raise ValueError("a prompt's evaluation names its version")
        if self.model is not None and self.version is not None:
            raise ValueError("a model's evaluation has no version")
        return self

    @property
    def subject(self) -> Subject:
        if self.prompt is not None:
            return Subject("prompt", self.prompt, self.version)
        assert self.model is not None
        return Subject("model", self.model)


class Evaluations:
    """Evaluation results over the control plane's database.

    ``config_of`` reads a revision's compiled config (the registry's cache):
    what the latest published revision knows decides which subjects exist.
    """

    def __init__(self, db: Database, config_of: Callable[[str], Mapping[str, Any]]) -> None:
        self.db = db
        self._config_of = config_of

    def record(
        self, result: EvaluationResult, principal: Principal, *, now: datetime | None = None
    ) -> Evaluation:
        """Store ``result`` as ``principal`` posted it; audited in the same transaction."""
        recorded_at = now or datetime.now(UTC)
        if result.evaluated_at > recorded_at + MAX_CLOCK_SKEW:
            raise EvaluationRefusedError(
                f"evaluated_at {result.evaluated_at.isoformat()} is in the future; send the "
                "time the evaluation ran"
            )
        subject = result.subject
        with self.db.session() as session:
            self._check_known(session, subject)
            row = Evaluation(
                kind=subject.kind,
                subject=subject.id,
                version=subject.version,
                safety_score=result.safety_score,
                hallucination_rate=result.hallucination_rate,
                p95_latency_ms=result.p95_latency_ms,
                cost_per_call_usd=result.cost_per_call_usd,
                dataset_id=result.dataset_id,
                dataset_size=result.dataset_size,
                evaluated_at=result.evaluated_at.astimezone(UTC),
                recorded_at=recorded_at,
                evaluator=principal.name,
                evaluator_principal=principal.principal_id,
            )
            session.add(row)
            session.flush()
            outbox.record(
                session,
                "evaluation.recorded",
                principal.name,
                evaluation=row.id,
                principal=principal.principal_id,
                kind=subject.kind,
                subject=subject.id,
                version=subject.version,
                safety_score=result.safety_score,
                hallucination_rate=result.hallucination_rate,
                p95_latency_ms=result.p95_latency_ms,
                cost_per_call_usd=result.cost_per_call_usd,
                dataset_id=result.dataset_id,
                dataset_size=result.dataset_size,
                evaluated_at=row.evaluated_at.isoformat(),
            )
            return row

    def recent(
        self, *, prompt: str | None = None, model: str | None = None, limit: int = MAX_LISTED
    ) -> list[Evaluation]:
        """Evaluations, newest first (by ``evaluated_at``), of one prompt or model or of all."""
        query = select(Evaluation)
        if prompt is not None:
            query = query.where(Evaluation.kind == "prompt", Evaluation.subject == prompt)
        if model is not None:
            query = query.where(Evaluation.kind == "model", Evaluation.subject == model)
        query = query.order_by(Evaluation.evaluated_at.desc(), Evaluation.id.desc())
        with self.db.session() as session:
            return list(session.scalars(query.limit(min(limit, MAX_LISTED))))

    def _check_known(self, session: Session, subject: Subject) -> None:
        newest = session.scalar(
            select(BundleRevision.revision).order_by(BundleRevision.published_at.desc()).limit(1)
        )
        if newest is None:
            raise UnknownSubjectError(
                f"no bundle is published yet, so {subject} is unknown: publish it first "
                "(without traffic), then evaluate it"
            )
        config = self._config_of(newest)
        if subject.kind == "model":
            if subject.id not in config.get("models", {}):
                raise UnknownSubjectError(
                    f"{subject} is not in the latest published revision ({newest[:12]})"
                )
            return
        prompt = config.get("prompts", {}).get(subject.id)
        if prompt is None:
            raise UnknownSubjectError(
                f"prompt {subject.id!r} is not in the latest published revision ({newest[:12]})"
            )
        if subject.version not in prompt.get("versions", {}):
            raise UnknownSubjectError(
                f"prompt {subject.id!r} has no version {subject.version!r} in the latest "
                f"published revision ({newest[:12]})"
            )


def latest(session: Session, subject: Subject) -> Measured | None:
    """What the latest evaluation of ``subject`` measured, or None if it has none."""
    version = (
        Evaluation.version.is_(None)
        if subject.version is None
        else Evaluation.version == subject.version
    )
    row = session.scalar(
        select(Evaluation)
        .where(Evaluation.kind == subject.kind, Evaluation.subject == subject.id, version)
        .order_by(Evaluation.evaluated_at.desc(), Evaluation.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    return Measured(
        safety_score=row.safety_score,
        hallucination_rate=row.hallucination_rate,
        p95_latency_ms=row.p95_latency_ms,
        cost_per_call_usd=row.cost_per_call_usd,
        dataset_id=row.dataset_id,
        dataset_size=row.dataset_size,
        evaluated_at=row.evaluated_at,
    )


def gate(session: Session, demands: tuple[QualityDemand, ...]) -> None:
    """Raise `QualityGateError` unless every demand's latest evaluation passes."""
    if not demands:
        return
    problems = judge(demands, lambda subject: latest(session, subject))
    if problems:
        raise QualityGateError(problems)


def gate_signed(session: Session, config: CompiledConfig, revision: str) -> None:
    """Raise `QualityLapsedError` unless the demands ``config`` carries still pass.

    Approval reads the thresholds from the revision about to be signed, not from
    the author's sources, and the evaluations as they are now.
    """
    demands = demands_in(config, f"revision {revision[:12]}")
    problems = judge(demands, lambda subject: latest(session, subject))
    if problems:
        raise QualityLapsedError(
            "the revision cannot be approved: "
            + "; ".join(p.message for p in problems)
            + " (post a passing evaluation, or publish a rollout that routes no traffic to it)"
        )
