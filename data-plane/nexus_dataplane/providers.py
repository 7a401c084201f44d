"""Envoy clusters for LLM providers: one per provider, guarded by the spec's outlier
detection and circuit breakers, with its endpoints in priorities that never leave the
enforcer's jurisdiction.

An enforcer of region R (jurisdiction J) sends a provider's traffic to its endpoints in R
first (priority 0), then to those in the regions of J's failover list in order (its
``failover`` entry in the compiled bundle; without one, J's other regions by name).
Endpoints in another jurisdiction's regions are not in the cluster at all, so no
ejection, breaker or overload can send traffic there. Envoy moves traffic to the next
priority as the endpoints of one are ejected (an ejected host is unhealthy for priority
load), so a provider failing in R is served from the next region of J.

`ProviderRoutes` is what an enforcer's Envoy routes chats by: the clusters, and the
cluster of each model's provider. The decision names the model a chat goes to in
``x-nexus-route-model`` (a client's own is stripped before ext_authz); Envoy matches the
chat route on it once ext_authz has cleared the route cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROVIDER_CLUSTER_PREFIX",
    "ProviderConfigError",
    "ProviderRoutes",
    "locality_order",
    "provider_cluster",
    "provider_clusters",
]

PROVIDER_CLUSTER_PREFIX = "provider_"
CONNECT_TIMEOUT = "2s"
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_CONTEXT_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)


class ProviderConfigError(ValueError):
    """The compiled providers cannot be rendered for this enforcer's region."""


def locality_order(
    region: str, jurisdictions: Mapping[str, str], failover: Mapping[str, Sequence[str]]
) -> list[str]:
    """The regions an enforcer of ``region`` may send a provider's traffic to, in order."""
    jurisdiction = jurisdictions.get(region)
    if jurisdiction is None:
        raise ProviderConfigError(f"region {region!r} is not in the bundle's region list")
    listed = failover.get(jurisdiction)
    rest = (
        list(listed)
        if listed is not None
        else sorted(r for r, j in jurisdictions.items() if j == jurisdiction)
    )
    order = [region, *(r for r in rest if r != region)]
    # A failover list only names regions of its jurisdiction (checked when the bundle is
    # compiled); checked again here so a hand-edited config cannot cross it either.
    return [r for r in order if jurisdictions.get(r) == jurisdiction]


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def provider_cluster(
    provider_id: str, provider: Mapping[str, Any], order: Sequence[str]
) -> dict[str, Any] | None:
    """The cluster of ``provider``'s endpoints in ``order``'s regions; None if it has none."""
    localities: list[dict[str, Any]] = []
    tls = False
    for region in order:
        endpoints = [e for e in provider["endpoints"] if e["region"] == region]
        if not endpoints:
            continue
        tls = tls or any(e["tls"] for e in endpoints)
        localities.append(
            {
                "locality": {"region": region},
                "priority": len(localities),
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": e["host"], "port_value": e["port"]}
                            },
                            "hostname": e["host"],
                        }
                    }
                    for e in endpoints
                ],
            }
        )
    if not localities:
        return None
    outlier = provider["outlier_detection"]
    breakers = provider["circuit_breakers"]
    name = PROVIDER_CLUSTER_PREFIX + provider_id
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": name, "endpoints": localities},
        "outlier_detection": {
            "consecutive_5xx": outlier["consecutive_5xx"],
            "enforcing_consecutive_5xx": 100,
            "interval": _seconds(outlier["interval_ms"]),
            "base_ejection_time": _seconds(outlier["base_ejection_time_ms"]),
            "max_ejection_percent": outlier["max_ejection_percent"],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": breakers["max_connections"],
                    "max_pending_requests": breakers["max_pending_requests"],
                    "max_requests": breakers["max_requests"],
                    "max_retries": breakers["max_retries"],
                }
            ]
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": TLS_SOCKET,
            "typed_config": {"@type": TLS_CONTEXT_TYPE},
        }
    return cluster


def provider_clusters(config: Mapping[str, Any], region: str) -> list[dict[str, Any]]:
    """Every provider cluster an enforcer of ``region`` needs, from the compiled bundle."""
    jurisdictions = {r: entry["jurisdiction"] for r, entry in config.get("regions", {}).items()}
    order = locality_order(region, jurisdictions, config.get("failover", {}))
    clusters = []
    for provider_id, provider in sorted(config.get("providers", {}).items()):
        cluster = provider_cluster(provider_id, provider, order)
        if cluster is not None:
            clusters.append(cluster)
    return clusters


@dataclass(frozen=True)
class ProviderRoutes:
    """Where an enforcer's Envoy sends chats: to the cluster of the routed model's provider."""

    clusters: tuple[Mapping[str, Any], ...]
    models: tuple[tuple[str, str], ...]
    """(model id, cluster name) for every model whose provider has a cluster in this region;
    a chat routed to any other model goes to the enforcer's upstream."""

    @classmethod
    def from_compiled(cls, config: Mapping[str, Any], region: str) -> ProviderRoutes:
        """From the policy bundle's ``nexus/config/data.json``, for an enforcer of ``region``."""
        clusters = provider_clusters(config, region)
        names = {cluster["name"] for cluster in clusters}
        models = []
        for model_id, model in sorted(config.get("models", {}).items()):
            name = PROVIDER_CLUSTER_PREFIX + str(model["provider"])
            if name in names:
                models.append((str(model_id), name))
        return cls(tuple(clusters), tuple(models))
