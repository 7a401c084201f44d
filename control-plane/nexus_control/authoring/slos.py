"""SLOs: cross-checking ``SLOs`` specs and compiling their capabilities into bundle data.

A capability is a named group of gateway routes and tools with availability and latency
objectives. The bundle carries only the grouping (``data.nexus.config.capabilities``: which
capability each route and tool belongs to), so the policy can label its decision and the
enforcer its metrics (``rego/nexus/capability.rego``); the objectives become Prometheus
recording rules and burn-rate alerts (:mod:`nexus_control.authoring.slo_rules`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nexus_contract.decision import decision_metrics
from nexus_control.authoring.config import CapabilitiesConfig
from nexus_control.authoring.loader import BundleSources, Problem, SpecDocument
from nexus_control.authoring.spec import LIMITED_ROUTES, MAX_CAPABILITIES, Capability, SLOsSpec

__all__ = ["check_slos", "compile_capabilities", "latency_bounds_ms"]

_ROUTE_NAMES = ", ".join(sorted(LIMITED_ROUTES))


def latency_bounds_ms() -> tuple[float, ...]:
    """The thresholds a latency objective may name: the decision histogram's bucket bounds."""
    return tuple(round(b * 1000, 6) for b in decision_metrics().duration_buckets_s)


@dataclass(frozen=True)
class _Located:
    doc: SpecDocument
    index: int
    capability: Capability

    def at(self, *key: str | int) -> str:
        file, line, _ = self.doc.at("capabilities", self.index, *key)
        return f"{file}:{line}"

    def problem(self, message: str, *key: str | int) -> Problem:
        return self.doc.problem(
            f"capability {self.capability.name!r}: {message}", "capabilities", self.index, *key
        )


def check_slos(
    sources: BundleSources, tools: Iterable[str], problems: list[Problem]
) -> tuple[Capability, ...]:
    """Every capability of the bundle's SLOs documents, cross-checked; problems are appended."""
    known_tools = set(tools)
    names: dict[str, _Located] = {}
    routes: dict[str, _Located] = {}
    tool_owner: dict[str, _Located] = {}
    good: list[Capability] = []
    for doc, spec in sources.of_kind(SLOsSpec):
        for i, capability in enumerate(spec.capabilities):
            here = _Located(doc, i, capability)
            first = names.get(capability.name)
            if first is not None:
                problems.append(here.problem(f"duplicate name (first at {first.at()})", "name"))
                continue
            names[capability.name] = here
            found = _problems_of(here, known_tools)
            found += _claims(here, "routes", capability.routes, routes)
            found += _claims(here, "tools", capability.tools, tool_owner)
            problems.extend(found)
            if not found:
                good.append(capability)
    if len(names) > MAX_CAPABILITIES:
        last = list(names.values())[MAX_CAPABILITIES]
        problems.append(
            last.problem(
                f"more than {MAX_CAPABILITIES} capabilities: each one labels the enforcers' "
                "decision metrics, so their number bounds those series",
                "name",
            )
        )
    return tuple(sorted(good, key=lambda c: c.name))


def _claims(
    here: _Located, field: str, items: Iterable[str], owners: dict[str, _Located]
) -> list[Problem]:
    """A route or tool belongs to one capability: a second claim is a problem."""
    out = []
    for j, item in enumerate(items):
        owner = owners.get(item)
        if owner is None:
            owners[item] = here
        elif owner is not here:
            out.append(
                here.problem(
                    f"{item!r} already belongs to capability {owner.capability.name!r} "
                    f"({owner.at('name')})",
                    field,
                    j,
                )
            )
    return out


def _problems_of(here: _Located, tools: set[str]) -> list[Problem]:
    capability = here.capability
    out: list[Problem] = []
    if not capability.routes and not capability.tools:
        out.append(here.problem("names no route and no tool, so no request belongs to it"))
    for j, route in enumerate(capability.routes):
        if route not in LIMITED_ROUTES:
            out.append(
                here.problem(
                    f"unknown route {route!r} (expected one of {_ROUTE_NAMES})", "routes", j
                )
            )
    for j, tool in enumerate(capability.tools):
        if tool not in tools:
            out.append(here.problem(f"unknown tool {tool!r}", "tools", j))
    objectives = capability.objectives
    if objectives.availability is None and objectives.latency is None:
        out.append(here.problem("declares no objective (availability or latency)", "objectives"))
    latency = objectives.latency
    if latency is not None and round(latency.threshold_ms, 6) not in latency_bounds_ms():
        bounds = ", ".join(f"{b:g}" for b in latency_bounds_ms())
        out.append(
            here.problem(
                f"thresholdMs {latency.threshold_ms:g} is not a bucket bound of the decision "
                f"latency histogram (one of {bounds}), so no rule could count it exactly",
                "objectives",
                "latency",
                "thresholdMs",
            )
        )
    return out


def compile_capabilities(capabilities: Iterable[Capability]) -> CapabilitiesConfig:
    """``data.nexus.config.capabilities``: the capability of each route and of each tool."""
    routes: dict[str, str] = {}
    tools: dict[str, str] = {}
    for capability in capabilities:
        routes.update(dict.fromkeys(capability.routes, capability.name))
        tools.update(dict.fromkeys(capability.tools, capability.name))
    return {"routes": dict(sorted(routes.items())), "tools": dict(sorted(tools.items()))}
