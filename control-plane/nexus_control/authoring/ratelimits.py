"""Rate limits: cross-checking ``RateLimits`` specs and compiling them into bundle data.

A limit compiles to an entry of ``data.nexus.config.rate_limits`` (keyed by
limit id). The policy (``rego/nexus/ratelimit.rego``) names, for each limit
that applies to an allowed request, the bucket the request counts against, in
the decision's dynamic metadata; Envoy enforces it (``nexus_dataplane.ratelimit``
renders Envoy's filters and the ratelimit service's config from the same entries).
Kept apart from the compiler and the resolver so either can change without this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nexus_control.authoring.config import RateLimitConfig
from nexus_control.authoring.loader import BundleSources, Problem, SpecDocument
from nexus_control.authoring.spec import LIMITED_ROUTES, RateLimit, RateLimitsSpec

__all__ = ["LLM_ROUTE", "check_rate_limits", "compile_rate_limits"]

LLM_ROUTE = "chat.completions"
"""The one route whose calls spend LLM tokens (tokens-per-minute limits apply only there)."""
_ROUTE_NAMES = ", ".join(sorted(LIMITED_ROUTES))


@dataclass(frozen=True)
class _Located:
    doc: SpecDocument
    index: int
    limit: RateLimit

    def problem(self, message: str, *key: str | int) -> Problem:
        return self.doc.problem(
            f"rate limit {self.limit.id!r}: {message}", "limits", self.index, *key
        )


def check_rate_limits(
    sources: BundleSources,
    tenants: Iterable[str],
    tools: Iterable[str],
    problems: list[Problem],
) -> tuple[RateLimit, ...]:
    """Every limit of the bundle's RateLimits documents, cross-checked; problems are appended."""
    known_tenants = set(tenants)
    known_tools = set(tools)
    seen: dict[str, _Located] = {}
    good: list[RateLimit] = []
    for doc, spec in sources.of_kind(RateLimitsSpec):
        for i, limit in enumerate(spec.limits):
            here = _Located(doc, i, limit)
            first = seen.get(limit.id)
            if first is not None:
                file, line, _ = first.doc.at("limits", first.index, "id")
                problems.append(here.problem(f"duplicate id (first at {file}:{line})", "id"))
                continue
            seen[limit.id] = here
            found = _problems_of(here, known_tenants, known_tools)
            problems.extend(found)
            if not found:
                good.append(limit)
    return tuple(sorted(good, key=lambda limit: limit.id))


def _problems_of(here: _Located, tenants: set[str], tools: set[str]) -> list[Problem]:
    limit = here.limit
    out: list[Problem] = []
    if limit.burst is not None and limit.burst < limit.rate:
        out.append(
            here.problem(
                f"burst ({limit.burst}) is less than rate ({limit.rate}): a bucket that holds "
                "fewer tokens than one refill adds can never admit the rate it promises",
                "burst",
            )
        )
    if limit.scope == "shared" and limit.burst is not None and limit.burst != limit.rate:
        out.append(
            here.problem(
                "shared limits are counted in fixed windows by envoyproxy/ratelimit, which "
                f"has no burst: leave burst out or set it to rate ({limit.rate})",
                "burst",
            )
        )
    for j, tenant in enumerate(limit.tenants):
        if tenant not in tenants:
            out.append(here.problem(f"unknown tenant {tenant!r}", "tenants", j))
    for j, route in enumerate(limit.routes):
        if route not in LIMITED_ROUTES:
            out.append(
                here.problem(
                    f"unknown route {route!r} (expected one of {_ROUTE_NAMES})",
                    "routes",
                    j,
                )
            )
    for j, tool in enumerate(limit.tools):
        if tool not in tools:
            out.append(here.problem(f"unknown tool {tool!r}", "tools", j))
    if limit.tools and limit.routes and "tools.invoke" not in limit.routes:
        out.append(here.problem("tools are selected but routes leaves out tools.invoke", "routes"))
    if limit.counts == "tokens":
        if limit.scope != "shared":
            out.append(
                here.problem(
                    "tokens are settled after the call by the ratelimit service: a tokens "
                    "limit must be scope: shared",
                    "scope",
                )
            )
        if any(route != LLM_ROUTE for route in limit.routes) or limit.tools:
            out.append(here.problem(f"a tokens limit applies to {LLM_ROUTE} only", "routes"))
    return out


def compile_rate_limits(limits: Iterable[RateLimit]) -> dict[str, RateLimitConfig]:
    """``data.nexus.config.rate_limits``: one entry per limit, selectors as sets (objects)."""
    return {limit.id: _compiled(limit) for limit in sorted(limits, key=lambda lim: lim.id)}


def _compiled(limit: RateLimit) -> RateLimitConfig:
    routes = list(limit.routes)
    if limit.counts == "tokens" and not routes:
        routes = [LLM_ROUTE]
    if limit.tools and not routes:
        routes = ["tools.invoke"]
    return {
        "scope": limit.scope,
        "key": limit.key,
        "counts": limit.counts,
        "unit": limit.unit,
        "rate": limit.rate,
        "burst": limit.bucket,
        "tenants": _set(limit.tenants),
        "plans": _set(p.value for p in limit.plans),
        "routes": _set(routes),
        "tools": _set(limit.tools),
    }


def _set(items: Iterable[str]) -> dict[str, bool]:
    return dict.fromkeys(sorted(set(items)), True)
