"""Prometheus rules from the SLOs specs: recording rules and multi-window burn-rate alerts.

Each capability's objectives become, over the windows below, the share of its decisions that
failed the objective (recording rules over the enforcers' ``nexus_decisions_total`` and
``nexus_decision_duration_seconds``), and alerts on how fast the error budget burns: a page
when 2 % of a 30-day budget goes in an hour or 5 % in six hours, a ticket when 10 % goes in a
day or the whole budget in three days — each confirmed by a short window, so an alert stops
soon after the burn does (the multi-window, multi-burn-rate alerts of Google's SRE workbook).

Availability counts the decisions no client got: ``unanswered_outcomes`` of the decision
metrics contract (shed by admission control, or failed). A refusal is an answer. Latency
counts decisions slower than the objective's threshold, a bucket bound of the histogram, so
the share is exact, not interpolated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from nexus_contract.decision import decision_metrics
from nexus_control.authoring.spec import Capability

__all__ = ["LONG_WINDOWS", "SHORT_WINDOWS", "WINDOWS", "render_slo_rules", "slo_rules"]

SHORT_WINDOWS = ("5m", "30m", "1h", "2h")
LONG_WINDOWS = ("6h", "1d", "3d")
"""Evaluated less often: a 3-day rate every 30 s would cost more than it tells."""
WINDOWS = SHORT_WINDOWS + LONG_WINDOWS
"""The windows recording rules compute, the alerts' long and short windows."""

RUNBOOKS = "deploy/runbooks"


@dataclass(frozen=True)
class _Burn:
    long: str
    short: str
    factor: float
    """How many times faster than the objective allows the budget burns."""


@dataclass(frozen=True)
class _Severity:
    name: str
    """The ``severity`` label, as the project's other alerts spell it."""
    wait: str
    burns: tuple[_Burn, _Burn]


SEVERITIES = (
    _Severity("critical", "2m", (_Burn("1h", "5m", 14.4), _Burn("6h", "30m", 6))),
    _Severity("warning", "15m", (_Burn("1d", "2h", 3), _Burn("3d", "6h", 1))),
)

_DECISIONS = decision_metrics().decisions_metric
_DURATION = decision_metrics().duration_metric


def _number(value: float) -> str:
    return f"{round(value, 10):g}"


def _le(threshold_ms: float) -> str:
    """A matcher of the histogram bucket ``le`` (Prometheus 3 writes ``1`` as ``1.0``)."""
    bound = _number(threshold_ms / 1000)
    if "." not in bound and "e" not in bound:
        return f'le=~"{bound}|{bound}.0"'
    return f'le="{bound}"'


def _recording(
    capabilities: tuple[Capability, ...], windows: Iterable[str]
) -> list[dict[str, Any]]:
    unanswered = "|".join(decision_metrics().unanswered_outcomes)
    rules: list[dict[str, Any]] = []
    for w in windows:
        total = f"sum by (capability) (rate({_DECISIONS}[{w}]))"
        failed = f'sum by (capability) (rate({_DECISIONS}{{outcome=~"{unanswered}"}}[{w}]))'
        rules.append({"record": f"nexus:capability_decisions:rate{w}", "expr": total})
        rules.append(
            {
                "record": f"nexus:capability_error_ratio:rate{w}",
                # A capability with no failure has no failed series: count it as 0.
                "expr": f"({failed} or {total} * 0) / {total}",
            }
        )
        for c in capabilities:
            latency = c.objectives.latency
            if latency is None:
                continue
            selector = f'capability="{c.name}"'
            bucket = f"{_DURATION}_bucket{{{selector},{_le(latency.threshold_ms)}}}"
            fast = f"sum by (capability) (rate({bucket}[{w}]))"
            count = f"sum by (capability) (rate({_DURATION}_count{{{selector}}}[{w}]))"
            rules.append(
                {
                    "record": f"nexus:capability_slow_ratio:rate{w}",
                    "expr": f"1 - {fast} / {count}",
                    "labels": {"capability": c.name},
                }
            )
    return rules


def _objectives(capabilities: tuple[Capability, ...]) -> list[dict[str, Any]]:
    rules = []
    for c in capabilities:
        objectives = c.objectives
        if objectives.availability is not None:
            rules.append(_objective("availability", c.name, objectives.availability))
        if objectives.latency is not None:
            rules.append(_objective("latency", c.name, objectives.latency.target))
    return rules


def _objective(kind: str, capability: str, target: float) -> dict[str, Any]:
    """The objective as a series, for dashboards (error budget left) and alert text."""
    return {
        "record": f"nexus:capability_{kind}_objective",
        "expr": f"vector({_number(target)})",
        "labels": {"capability": capability},
    }


def _alerts(capabilities: tuple[Capability, ...]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for c in capabilities:
        objectives = c.objectives
        if objectives.availability is not None:
            rules += _burn_alerts(
                "NexusSLOAvailabilityBurn",
                "capability_error_ratio",
                c,
                objectives.availability,
                "of its requests unanswered (shed or failed)",
            )
        if objectives.latency is not None:
            threshold = _number(objectives.latency.threshold_ms)
            rules += _burn_alerts(
                "NexusSLOLatencyBurn",
                "capability_slow_ratio",
                c,
                objectives.latency.target,
                f"of its decisions slower than {threshold} ms",
            )
    return rules


def _burn_alerts(
    alert: str, ratio: str, capability: Capability, target: float, what: str
) -> list[dict[str, Any]]:
    budget = 1 - target
    selector = f'{{capability="{capability.name}"}}'
    out = []
    for severity in SEVERITIES:
        clauses = [
            f"(nexus:{ratio}:rate{b.long}{selector} > {_number(b.factor * budget)}"
            f" and nexus:{ratio}:rate{b.short}{selector} > {_number(b.factor * budget)})"
            for b in severity.burns
        ]
        windows = " or ".join(f"{b.long}/{b.short} at {_number(b.factor)}x" for b in severity.burns)
        out.append(
            {
                "alert": alert,
                "expr": " or ".join(clauses),
                "for": severity.wait,
                "labels": {"severity": severity.name, "capability": capability.name},
                "annotations": {
                    "summary": (
                        f"Capability {capability.name} is burning its error budget: "
                        f"{{{{ $value | humanizePercentage }}}} {what} "
                        f"(objective {_number(target * 100)} %)"
                    ),
                    "description": f"Burn rate over {windows} the budget of a "
                    f"{_number(target * 100)} % objective.",
                    "runbook_url": f"{RUNBOOKS}/{alert}.md",
                },
            }
        )
    return out


def slo_rules(capabilities: Iterable[Capability]) -> dict[str, Any]:
    """The rule file (Prometheus format) for ``capabilities``."""
    ordered = tuple(sorted(capabilities, key=lambda c: c.name))
    return {
        "groups": [
            {
                "name": "nexus-slo-recording",
                "interval": "30s",
                "rules": _recording(ordered, SHORT_WINDOWS) + _objectives(ordered),
            },
            {
                "name": "nexus-slo-recording-long",
                "interval": "5m",
                "rules": _recording(ordered, LONG_WINDOWS),
            },
            {"name": "nexus-slo-alerts", "rules": _alerts(ordered)},
        ]
    }


HEADER = """\
# Generated by `nexus-policy slo-rules {source}` from its SLOs specs: do not edit by hand.
# Recording rules (availability and latency error ratios per agent capability over
# {windows}) and multi-window burn-rate alerts (runbooks in deploy/runbooks/). The test
# command regenerates this file and fails if it differs; `promtool check rules` and
# `promtool test rules tests/alerts/slo-rules.test.yml` judge it. The chart's
# PrometheusRule carries the same groups.
"""


def render_slo_rules(capabilities: Iterable[Capability], source: str) -> str:
    """The rule file as YAML text, with its header."""
    body = yaml.safe_dump(slo_rules(capabilities), sort_keys=False, width=200)
    return HEADER.format(source=source, windows=", ".join(WINDOWS)) + body
