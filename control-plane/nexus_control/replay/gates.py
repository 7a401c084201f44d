"""Gates on a replay report, as the fleet file declares them, and their verdict.

A gate is a limit on what a candidate would do to recorded traffic:
deny→allow decisions on tools of at least a given risk (a count, usually 0),
allow→deny and not-replayable decisions (fractions of the records), and a
minimum number of records below which the replay proves too little to pass,
and the candidate's p99 evaluation time against the baseline's.
Every gate is judged and reported, passed or not.

The p99 gate is the one verdict that is not a function of the report alone:
it reads the evaluation times measured beside the report (same machine, same
run, both sides), which the deterministic report leaves out. Replaying the
same window twice gives the same report, and may give a different p99 verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, model_validator

from nexus_control.authoring.spec import Risk, RiskLevel, _Strict
from nexus_control.replay.report import Change, ReplayReport, Timing

__all__ = [
    "DEFAULT_WINDOW_HOURS",
    "GateResult",
    "GateVerdict",
    "ReplayGates",
    "ShadowGates",
    "judge",
]

DEFAULT_WINDOW_HOURS = 24


class ReplayGates(_Strict):
    """``replay_gates`` in the fleet file; an unset limit is no gate."""

    window_hours: Annotated[int, Field(ge=1, le=24 * 90)] = DEFAULT_WINDOW_HOURS
    """Publish replays the decisions of the last ``window_hours``."""
    deny_to_allow_max: Annotated[int, Field(ge=0)] | None = 0
    deny_to_allow_min_risk: Risk = RiskLevel.HIGH
    """Only tools at this risk or above count against ``deny_to_allow_max``."""
    allow_to_deny_max_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    not_replayable_max_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    min_sample: Annotated[int, Field(ge=0)] | None = None
    p99_inflation_max: Annotated[float, Field(ge=0, le=100)] | None = None
    """Most the candidate's p99 evaluation time may exceed the baseline's (0.2: by 20 %)."""


class ShadowGates(ReplayGates):
    """``shadow_gates`` in the fleet file: the replay gates' limits, judged on the shadow
    outcomes of the next wave's regions before a rollout is promoted into it
    (`nexus_control.rollout.shadowgate`). ``window_hours`` is unused (a shadow report counts
    every outcome since the shadow began), and a p99 gate cannot be judged on a shadow."""

    required: bool = False
    """Hold promotion into a wave whose regions shadow no revision of the rollout; without
    it, a wave with no such shadow is promoted into on the rollout's other checks alone."""

    @model_validator(mode="after")
    def _no_p99(self) -> ShadowGates:
        if self.p99_inflation_max is not None:
            raise ValueError(
                "p99_inflation_max is not a shadow gate: a shadow measures the candidate's "
                "evaluation time only; declare it in replayGates"
            )
        return self


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    observed: float
    limit: float
    note: str | None = None
    """Why a gate could not be measured (it then fails)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "observed": self.observed,
            "limit": self.limit,
            "note": self.note,
        }


@dataclass(frozen=True)
class GateVerdict:
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(result.gate for result in self.results if not result.passed)


def judge(
    gates: ReplayGates,
    report: ReplayReport,
    risk_of: Callable[[str], RiskLevel | None],
    timing: Timing | None = None,
) -> GateVerdict:
    """Every configured gate judged against ``report``; tools' risk from ``risk_of``.

    ``timing`` (default: the report's own measurements) feeds the p99 gate.
    """
    results: list[GateResult] = []
    if gates.deny_to_allow_max is not None:
        floor = gates.deny_to_allow_min_risk.rank
        risky = sum(
            count
            for tool, count in report.deny_to_allow_by_tool.items()
            if (risk := risk_of(tool)) is not None and risk.rank >= floor
        )
        results.append(
            GateResult(
                f"deny_to_allow[risk>={gates.deny_to_allow_min_risk.value}]",
                risky <= gates.deny_to_allow_max,
                float(risky),
                float(gates.deny_to_allow_max),
            )
        )
    fractions: Mapping[str, tuple[float | None, Change]] = {
        "allow_to_deny_fraction": (gates.allow_to_deny_max_fraction, Change.ALLOW_TO_DENY),
        "not_replayable_fraction": (gates.not_replayable_max_fraction, Change.NOT_REPLAYABLE),
    }
    for name, (limit, change) in fractions.items():
        if limit is not None:
            observed = report.fraction(change)
            results.append(GateResult(name, observed <= limit, round(observed, 6), limit))
    if gates.min_sample is not None:
        replayed = report.total - report.counts.get(Change.NOT_REPLAYABLE, 0)
        results.append(
            GateResult("min_sample", replayed >= gates.min_sample, float(replayed),
                       float(gates.min_sample))
        )  # fmt: skip
    if gates.p99_inflation_max is not None:
        results.append(_p99_inflation(gates.p99_inflation_max, timing or report.timing))
    return GateVerdict(tuple(results))


def _p99_inflation(limit: float, timing: Timing) -> GateResult:
    before, after = timing.baseline_p99_ns, timing.candidate_p99_ns
    if before is None or after is None or before <= 0:
        unmeasured = "no decision was evaluated on both sides: nothing measured"
        return GateResult("p99_inflation", False, 0.0, limit, note=unmeasured)
    inflation = round(after / before - 1, 6)
    return GateResult("p99_inflation", inflation <= limit, inflation, limit)
