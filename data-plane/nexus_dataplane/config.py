"""Renders the configuration of one enforcer: OPA's config and Envoy's bootstrap.

OPA: two signed bundles (``nexus`` and ``nexus-state``) long-polled from the
control plane with the enforcer's bearer token and its stable id in a header;
``persist: true`` so a restart keeps the last good bundle; the status plugin;
decision logs to the audit service with short delays and a buffer sized so
nothing is dropped at the target load; stable labels; the ext_authz plugin.

Envoy: one listener whose HTTP filters are ext_authz (gRPC to this OPA,
``failure_mode_allow: false``, a short timeout) and the router; the decision
id from the plugin's dynamic metadata is added to the upstream request and to
the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY_BUNDLE = "nexus"
STATE_BUNDLE = "nexus-state"
DECISION_PATH = "nexus/envoy/authz/decision"
ENFORCER_HEADER = "x-nexus-enforcer"
DECISION_ID_HEADER = "x-nexus-decision-id"

LONG_POLL_TIMEOUT_S = 30
MIN_POLL_DELAY_S = 1
MAX_POLL_DELAY_S = 5
LOG_MIN_DELAY_S = 1
LOG_MAX_DELAY_S = 2
LOG_BUFFER_EVENTS = 200_000
"""60 s of 1k decisions/s is 60k events; the buffer holds three times that."""
LOG_UPLOAD_LIMIT_BYTES = 8 * 1024 * 1024
EXT_AUTHZ_TIMEOUT_S = 0.25
MAX_REQUEST_BODY_BYTES = 64 * 1024

_TYPES = "type.googleapis.com/envoy.extensions"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE = f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ_TYPE = f"{_TYPES}.filters.http.ext_authz.v3.ExtAuthz"
ROUTER_TYPE = f"{_TYPES}.filters.http.router.v3.Router"


@dataclass(frozen=True)
class EnforcerSpec:
    """Everything that differs between two enforcers."""

    region: str
    enforcer_id: str
    control_plane_url: str
    token: str
    key_id: str
    verification_key_pem: str
    persistence_dir: Path
    grpc_port: int
    opa_port: int
    envoy_port: int
    envoy_admin_port: int
    upstream_host: str
    upstream_port: int
    audit_url: str | None = None
    audit_token: str | None = None
    long_poll_timeout_s: int = LONG_POLL_TIMEOUT_S


def opa_config(spec: EnforcerSpec) -> dict[str, Any]:
    headers = {ENFORCER_HEADER: spec.enforcer_id}
    services: dict[str, Any] = {
        "control-plane": {
            "url": spec.control_plane_url.rstrip("/") + "/v1/opa",
            "credentials": {"bearer": {"token": spec.token}},
            "headers": headers,
            "response_header_timeout_seconds": 10,
        }
    }
    polling = {
        "min_delay_seconds": MIN_POLL_DELAY_S,
        "max_delay_seconds": MAX_POLL_DELAY_S,
        "long_polling_timeout_seconds": spec.long_poll_timeout_s,
    }
    bundles = {
        name: {
            "service": "control-plane",
            "resource": f"bundles/{spec.region}/{name}",
            "persist": True,
            "polling": polling,
            "signing": {"keyid": spec.key_id},
        }
        for name in (POLICY_BUNDLE, STATE_BUNDLE)
    }
    config: dict[str, Any] = {
        "services": services,
        "labels": {"region": spec.region, "enforcer": spec.enforcer_id},
        "keys": {spec.key_id: {"algorithm": "RS256", "key": spec.verification_key_pem}},
        "bundles": bundles,
        "persistence_directory": str(spec.persistence_dir),
        # prometheus: OPA's /metrics then carries bundle and decision-log counters.
        "status": {"service": "control-plane", "prometheus": True},
        "plugins": {
            "envoy_ext_authz_grpc": {
                "addr": f"127.0.0.1:{spec.grpc_port}",
                "path": DECISION_PATH,
            }
        },
    }
    if spec.audit_url:
        services["audit"] = {
            "url": spec.audit_url.rstrip("/") + "/v1/opa",
            "credentials": {"bearer": {"token": spec.audit_token or spec.token}},
            "headers": headers,
        }
        config["decision_logs"] = {
            "service": "audit",
            "reporting": {
                "min_delay_seconds": LOG_MIN_DELAY_S,
                "max_delay_seconds": LOG_MAX_DELAY_S,
                "buffer_type": "event",
                "buffer_size_limit_events": LOG_BUFFER_EVENTS,
                "upload_size_limit_bytes": LOG_UPLOAD_LIMIT_BYTES,
            },
        }
    return config


def _cluster(name: str, host: str, port: int, *, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _decision_id_header() -> dict[str, Any]:
    return {
        "header": {
            "key": DECISION_ID_HEADER,
            "value": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%",
        },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def envoy_config(spec: EnforcerSpec, *, with_ext_authz: bool = True) -> dict[str, Any]:
    """Envoy's bootstrap; ``with_ext_authz=False`` gives the same proxy without OPA (benchmarks)."""
    http_filters: list[dict[str, Any]] = []
    if with_ext_authz:
        http_filters.append(
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": EXT_AUTHZ_TYPE,
                    "transport_api_version": "V3",
                    "failure_mode_allow": False,
                    "status_on_error": {"code": 503},
                    "with_request_body": {
                        "max_request_bytes": MAX_REQUEST_BODY_BYTES,
                        "allow_partial_message": False,
                    },
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": "opa"},
                        "timeout": f"{EXT_AUTHZ_TIMEOUT_S}s",
                    },
                },
            }
        )
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": ROUTER_TYPE},
        }
    )
    clusters = [_cluster("upstream", spec.upstream_host, spec.upstream_port, http2=False)]
    if with_ext_authz:
        clusters.append(_cluster("opa", "127.0.0.1", spec.grpc_port, http2=True))
    return {
        "node": {"id": spec.enforcer_id, "cluster": spec.region},
        "admin": {
            "address": {
                "socket_address": {"address": "127.0.0.1", "port_value": spec.envoy_admin_port}
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": spec.envoy_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM_TYPE,
                                        "stat_prefix": "gateway",
                                        "route_config": {
                                            "name": "gateway",
                                            "virtual_hosts": [
                                                {
                                                    "name": "gateway",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {
                                                                "cluster": "upstream",
                                                                "timeout": "30s",
                                                            },
                                                            "request_headers_to_add": [
                                                                _decision_id_header()
                                                            ],
                                                            "response_headers_to_add": [
                                                                _decision_id_header()
                                                            ],
                                                        }
                                                    ],
                                                }
                                            ],
                                        },
                                        "http_filters": http_filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }
