"""Provider failover: cross-checking fallbacks, providers and region priorities, and
compiling them into bundle data.

The rules a bundle must meet (each broken one is a ``file:line`` problem):

- a model's fallback is a known model, not the model itself, named once, and the
  fallback graph has no cycle (a degraded model never routes back to itself);
- a fallback shares at least one plan with its primary: a fallback no tenant of
  the primary could ever use is a mistake, not a choice. The policy still checks
  the requesting tenant's own plan at run time and skips a fallback outside it;
- when the bundle has Providers specs, every model's provider is one of them, and
  a fallback's provider serves at least one jurisdiction its primary's provider
  serves (else failing over would always leave the tenant's jurisdiction);
- a provider endpoint names a known region;
- a region priority list names known regions of its own jurisdiction only, once
  each, and a jurisdiction has one list.

Compiled: ``models[m].fallbacks`` (ordered ids), ``providers`` (endpoints and
Envoy's guards, by id) and ``failover`` (jurisdiction → ordered regions), which
the policy and the data plane's Envoy renderer read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nexus_control.authoring.config import ProviderConfig
from nexus_control.authoring.loader import BundleSources, Problem, SpecDocument
from nexus_control.authoring.spec import Model, Provider, ProvidersSpec, Region, RegionsSpec

__all__ = ["Failover", "check_failover", "compile_providers"]


@dataclass(frozen=True)
class Failover:
    providers: tuple[Provider, ...] = ()
    """Sorted by id."""
    priorities: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Jurisdiction → regions in order of preference, sorted by jurisdiction."""


def check_failover(
    sources: BundleSources,
    regions: Mapping[str, tuple[SpecDocument, Region]],
    models: Mapping[str, tuple[SpecDocument, Model]],
    problems: list[Problem],
) -> Failover:
    """The bundle's providers and region priorities, cross-checked; problems are appended."""
    jurisdiction_of = {rid: region.jurisdiction for rid, (_, region) in regions.items()}
    priorities = _check_priorities(sources, jurisdiction_of, problems)
    providers = _check_providers(sources, jurisdiction_of, problems)
    _check_fallbacks(models, providers, jurisdiction_of, problems)
    return Failover(
        providers=tuple(providers[k][1] for k in sorted(providers)),
        priorities=tuple(sorted(priorities.items())),
    )


def _check_priorities(
    sources: BundleSources, jurisdiction_of: Mapping[str, str], problems: list[Problem]
) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for doc, spec in sources.of_kind(RegionsSpec):
        for i, entry in enumerate(spec.failover):
            where = ("failover", i)
            if entry.jurisdiction in found:
                problems.append(
                    doc.problem(
                        f"jurisdiction {entry.jurisdiction!r} has two failover lists",
                        *where,
                        "jurisdiction",
                    )
                )
                continue
            if entry.jurisdiction not in jurisdiction_of.values():
                problems.append(
                    doc.problem(
                        f"no region is in jurisdiction {entry.jurisdiction!r}",
                        *where,
                        "jurisdiction",
                    )
                )
            seen: set[str] = set()
            for j, rid in enumerate(entry.regions):
                other = jurisdiction_of.get(rid)
                if other is None:
                    message = f"unknown region {rid!r}"
                elif other != entry.jurisdiction:
                    message = (
                        f"region {rid!r} is in jurisdiction {other!r}, not "
                        f"{entry.jurisdiction!r}: failover may not leave the jurisdiction"
                    )
                elif rid in seen:
                    message = f"region {rid!r} is listed twice"
                else:
                    seen.add(rid)
                    continue
                problems.append(doc.problem(message, *where, "regions", j))
            found[entry.jurisdiction] = tuple(entry.regions)
    return found


def _check_providers(
    sources: BundleSources, jurisdiction_of: Mapping[str, str], problems: list[Problem]
) -> dict[str, tuple[SpecDocument, Provider]]:
    found: dict[str, tuple[SpecDocument, Provider]] = {}
    for doc, spec in sources.of_kind(ProvidersSpec):
        for i, provider in enumerate(spec.providers):
            if provider.id in found:
                file, line, _ = found[provider.id][0].at("providers")
                problems.append(
                    doc.problem(
                        f"duplicate provider id {provider.id!r} (first in {file}:{line})",
                        "providers",
                        i,
                        "id",
                    )
                )
                continue
            found[provider.id] = (doc, provider)
            first_tls = provider.endpoints[0].tls
            for j, endpoint in enumerate(provider.endpoints):
                if endpoint.tls != first_tls:
                    problems.append(
                        doc.problem(
                            f"provider {provider.id!r}: endpoint {endpoint.host}:{endpoint.port} "
                            f"{'uses' if endpoint.tls else 'does not use'} TLS and the first one "
                            f"{'does' if first_tls else 'does not'}: one cluster speaks one "
                            "transport (split the provider, or use TLS everywhere)",
                            "providers",
                            i,
                            "endpoints",
                            j,
                            "tls",
                        )
                    )
                if endpoint.region not in jurisdiction_of:
                    problems.append(
                        doc.problem(
                            f"provider {provider.id!r}: unknown region {endpoint.region!r}",
                            "providers",
                            i,
                            "endpoints",
                            j,
                            "region",
                        )
                    )
    return found


def _check_fallbacks(
    models: Mapping[str, tuple[SpecDocument, Model]],
    providers: Mapping[str, tuple[SpecDocument, Provider]],
    jurisdiction_of: Mapping[str, str],
    problems: list[Problem],
) -> None:
    def served(provider_id: str) -> set[str]:
        entry = providers.get(provider_id)
        if entry is None:
            return set()
        return {
            jurisdiction_of[e.region] for e in entry[1].endpoints if e.region in jurisdiction_of
        }

    for mid, (doc, model) in sorted(models.items()):
        at = ("models", _index_of(doc, model))
        if providers and model.provider not in providers:
            problems.append(
                doc.problem(f"model {mid!r}: unknown provider {model.provider!r}", *at, "provider")
            )
        seen: set[str] = set()
        for k, fid in enumerate(model.fallbacks):
            key = (*at, "fallbacks", k)
            fallback = models.get(fid)
            if fallback is None:
                message = f"model {mid!r}: unknown fallback model {fid!r}"
            elif fid == mid:
                message = f"model {mid!r} names itself as a fallback"
            elif fid in seen:
                message = f"model {mid!r}: fallback {fid!r} is listed twice"
            elif not set(fallback[1].plans) & set(model.plans):
                message = (
                    f"model {mid!r}: fallback {fid!r} is in no plan that includes {mid!r} "
                    f"({', '.join(sorted(p.value for p in model.plans))})"
                )
            elif providers and not served(fallback[1].provider) & served(model.provider):
                message = (
                    f"model {mid!r}: fallback {fid!r} is served in no jurisdiction {mid!r} is "
                    "served in, so failing over would leave the tenant's jurisdiction"
                )
            else:
                seen.add(fid)
                continue
            problems.append(doc.problem(message, *key))
    _check_cycles(models, problems)


def _check_cycles(
    models: Mapping[str, tuple[SpecDocument, Model]], problems: list[Problem]
) -> None:
    """Report each fallback edge that closes a cycle, once, at the model it leaves."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mid: str, path: list[str]) -> None:
        state[mid] = 1
        doc, model = models[mid]
        for k, fid in enumerate(model.fallbacks):
            if fid not in models or fid == mid:
                continue
            if state.get(fid) == 1:
                cycle = " → ".join([*path[path.index(fid) :], mid, fid])
                problems.append(
                    doc.problem(
                        f"fallback cycle {cycle}", "models", _index_of(doc, model), "fallbacks", k
                    )
                )
            elif fid not in state:
                visit(fid, [*path, mid])
        state[mid] = 2

    for mid in sorted(models):
        if mid not in state:
            visit(mid, [])


def _index_of(doc: SpecDocument, model: Model) -> int:
    for i, candidate in enumerate(getattr(doc.spec, "models", [])):
        if candidate is model:
            return i
    return 0


def compile_providers(failover: Failover) -> dict[str, ProviderConfig]:
    return {
        p.id: {
            "endpoints": [
                {"region": e.region, "host": e.host, "port": e.port, "tls": e.tls}
                for e in p.endpoints
            ],
            "outlier_detection": {
                "consecutive_5xx": p.outlier_detection.consecutive_5xx,
                "interval_ms": p.outlier_detection.interval_ms,
                "base_ejection_time_ms": p.outlier_detection.base_ejection_time_ms,
                "max_ejection_percent": p.outlier_detection.max_ejection_percent,
            },
            "circuit_breakers": {
                "max_connections": p.circuit_breakers.max_connections,
                "max_pending_requests": p.circuit_breakers.max_pending_requests,
                "max_requests": p.circuit_breakers.max_requests,
                "max_retries": p.circuit_breakers.max_retries,
            },
        }
        for p in failover.providers
    }
