"""Envoy for one enforcer: its bootstrap, and the real ``envoy`` process.

One listener whose HTTP filters are a header mutation that strips every
client-sent header claiming a fact (`UNTRUSTED_FACT_HEADERS`), ext_authz
(gRPC to this enforcer's OPA,
``failure_mode_allow: false``, a short timeout) and the router; the decision
id from the plugin's dynamic metadata is added to the upstream request and to
the response. Every finished request is streamed back to OPA on Envoy's gRPC
access log service, so the plugin learns which of its answers the client did
not get (delivery receipts). The request body reaches OPA only on routes whose policy reads
it (`EnforcerSpec.body_limits`, tool calls by default), up to each route's
limit; any other body, a long chat context say, goes upstream unbuffered.
With the bundle's providers (`EnforcerSpec.providers`), a chat goes to the cluster of
the provider of the model the decision routed it to (``x-nexus-route-model``, set by
the decision; ext_authz clears the route cache so the route is chosen on it).
The listener canonicalises the path first (`PATH_NORMALISATION`): ext_authz
and the upstream see the same, normalised path, and a path that cannot be
made canonical without changing its meaning is refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from nexus_contract.wire import (
    DECISION_ID_HEADER,
    DECISION_ID_METADATA_KEY,
    EXT_AUTHZ_METADATA_NAMESPACE,
    ROUTE_MODEL_HEADER,
    UNTRUSTED_FACT_HEADERS,
)
from nexus_dataplane.process import ManagedProcess, http_ok
from nexus_dataplane.ratelimit import (
    RATELIMIT_CLUSTER,
    global_ratelimit_filter,
    local_ratelimit_filter,
    refusal_access_log,
    refusal_reply_config,
)
from nexus_dataplane.spec import ConfigError, EnforcerSpec, TracingSpec

__all__ = [
    "CHAT_PATH",
    "PATH_NORMALISATION",
    "EnvoyProxy",
    "envoy_config",
    "validate_envoy_config",
]

EXT_AUTHZ_TIMEOUT_S = 0.25
CHAT_PATH = "/v1/chat/completions"
"""The route whose requests go to the routed model's provider (with providers)."""
UPSTREAM_TIMEOUT = "30s"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
ENVOY_READY_TIMEOUT_S = 30.0
VALIDATE_TIMEOUT_S = 60.0

_TYPES = "type.googleapis.com/envoy.extensions"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE = f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ_TYPE = f"{_TYPES}.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE_TYPE = f"{_TYPES}.filters.http.ext_authz.v3.ExtAuthzPerRoute"
ROUTER_TYPE = f"{_TYPES}.filters.http.router.v3.Router"
PATH_NORMALISATION: dict[str, Any] = {
    # RFC 3986 section 6: dot segments ("/./", "/../", and their %2e forms)
    # resolved, escapes normalised, before routing and before ext_authz.
    "normalize_path": True,
    # "//" and longer runs become one "/", anywhere in the path.
    "merge_slashes": True,
    # An escaped slash or backslash (%2F, %2f, %5C, %5c) is a 400 from Envoy: the
    # plugin decodes escapes before it splits the path, so a forwarded
    # "/v1/chat%2Fcompletions" would be decided as one route and routed
    # upstream as another. No gateway route has a slash inside a segment.
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
}
"""How the listener canonicalises :path, so the policy decides on the path the upstream gets."""
OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
OTLP_CLUSTER = "otlp"
OTLP_TIMEOUT = "1s"
GRPC_ACCESS_LOGGER = "envoy.access_loggers.http_grpc"
GRPC_ACCESS_LOG_TYPE = f"{_TYPES}.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
DELIVERY_LOG_NAME = "nexus-delivery"
DELIVERY_LOG_FLUSH = "0.25s"
"""How long Envoy buffers access log entries before streaming them: an answer waits about
this long (after its request ends) for the entry that confirms or refutes its delivery."""
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation"
HEADER_MUTATION_TYPE = f"{_TYPES}.filters.http.header_mutation.v3.HeaderMutation"
_DECISION_ID_FROM_METADATA = (
    f"%DYNAMIC_METADATA({EXT_AUTHZ_METADATA_NAMESPACE}:{DECISION_ID_METADATA_KEY})%"
)


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
            "value": _DECISION_ID_FROM_METADATA,
        },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def _strip_fact_headers_filter() -> dict[str, Any]:
    """Remove every client-sent header that would claim a fact, before ext_authz sees it.

    The policy never reads them (it decides on the credential, bundle data, the
    state bundle and signed tokens), and stripping keeps them from the upstream too.
    """
    return {
        "name": HEADER_MUTATION_FILTER,
        "typed_config": {
            "@type": HEADER_MUTATION_TYPE,
            "mutations": {
                "request_mutations": [{"remove": name} for name in UNTRUSTED_FACT_HEADERS]
            },
        },
    }


def _ext_authz_filter(*, reroute: bool) -> dict[str, Any]:
    """ext_authz to this enforcer's OPA; no body by default (routes that need one say so).

    ``reroute``: the route is chosen again once the decision's headers are set (Envoy picks
    one before ext_authz, on the request as the client sent it)."""
    typed: dict[str, Any] = {
        "@type": EXT_AUTHZ_TYPE,
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": 503},
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "opa"},
            "timeout": f"{EXT_AUTHZ_TIMEOUT_S}s",
        },
    }
    if reroute:
        typed["clear_route_cache"] = True
    return {"name": EXT_AUTHZ_FILTER, "typed_config": typed}


def _delivery_access_log() -> dict[str, Any]:
    """Every finished request, streamed to this enforcer's OPA (the ext_authz plugin serves
    the access log service on its port): it matches each with the answer it gave and logs a
    receipt for one the client did not get as sent (its ext_authz timeout fired first)."""
    return {
        "name": GRPC_ACCESS_LOGGER,
        "typed_config": {
            "@type": GRPC_ACCESS_LOG_TYPE,
            "common_config": {
                "log_name": DELIVERY_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "opa"}},
                "buffer_flush_interval": DELIVERY_LOG_FLUSH,
            },
        },
    }


def _with_body(limit: int) -> dict[str, Any]:
    """Per-route ext_authz settings that forward the body, up to ``limit`` bytes (413 beyond)."""
    return {
        EXT_AUTHZ_FILTER: {
            "@type": EXT_AUTHZ_PER_ROUTE_TYPE,
            "check_settings": {
                "with_request_body": {"max_request_bytes": limit, "allow_partial_message": False}
            },
        }
    }


def _routes(spec: EnforcerSpec, *, with_ext_authz: bool) -> list[dict[str, Any]]:
    """A chat route per routed model (with providers), one route per path prefix whose policy
    reads the body, then every other path."""

    def route(
        prefix: str, per_filter: dict[str, Any] | None, cluster: str = "upstream"
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "match": {"prefix": prefix},
            "route": {"cluster": cluster, "timeout": UPSTREAM_TIMEOUT},
            "request_headers_to_add": [_decision_id_header()],
            "response_headers_to_add": [_decision_id_header()],
        }
        if per_filter:
            entry["typed_per_filter_config"] = per_filter
        return entry

    bodies = [
        route(prefix, _with_body(limit) if with_ext_authz else None)
        for prefix, limit in spec.body_limits
    ]
    models = []
    if spec.providers is not None and with_ext_authz:
        chat_limit = dict(spec.body_limits).get(CHAT_PATH)
        for model, cluster in spec.providers.models:
            entry = route(CHAT_PATH, _with_body(chat_limit) if chat_limit else None, cluster)
            entry["match"]["headers"] = [
                {"name": ROUTE_MODEL_HEADER, "string_match": {"exact": model}}
            ]
            models.append(entry)
    return [*models, *bodies, route("/", None)]


def _tracing(tracing: TracingSpec, enforcer_id: str) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer: W3C trace context in and out, spans over OTLP gRPC.

    A request is sampled at ``sample_percent`` unless its ``traceparent`` already
    says; the ext_authz call is a child span whose context reaches OPA as gRPC
    metadata, and the router forwards the context to the upstream."""
    return {
        "random_sampling": {"value": tracing.sample_percent},
        "provider": {
            "name": OTEL_TRACER,
            "typed_config": {
                "@type": OTEL_CONFIG_TYPE,
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": OTLP_CLUSTER},
                    "timeout": OTLP_TIMEOUT,
                },
                "service_name": f"nexus-envoy-{enforcer_id}",
            },
        },
    }


def envoy_config(spec: EnforcerSpec, *, with_ext_authz: bool = True) -> dict[str, Any]:
    """Envoy's bootstrap; ``with_ext_authz=False`` gives the same proxy without OPA (benchmarks)."""
    http_filters = [_strip_fact_headers_filter()]
    if with_ext_authz:
        http_filters.append(_ext_authz_filter(reroute=spec.providers is not None))
    limits = spec.rate_limits if with_ext_authz else None
    if limits is not None and limits.local:
        http_filters.append(local_ratelimit_filter(limits))
    if limits is not None and limits.shared:
        if spec.ratelimit_port is None:
            raise ConfigError("shared rate limits need the ratelimit service (ratelimit_port)")
        http_filters.append(global_ratelimit_filter(limits))
    http_filters.append(
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
    )
    clusters = [_cluster("upstream", spec.upstream_host, spec.upstream_port, http2=False)]
    if with_ext_authz:
        clusters.append(_cluster("opa", "127.0.0.1", spec.grpc_port, http2=True))
        if spec.providers is not None:
            clusters += [dict(cluster) for cluster in spec.providers.clusters]
    if limits is not None and limits.shared and spec.ratelimit_port is not None:
        clusters.append(_cluster(RATELIMIT_CLUSTER, "127.0.0.1", spec.ratelimit_port, http2=True))
    if spec.tracing:
        clusters.append(
            _cluster(OTLP_CLUSTER, spec.tracing.otlp_host, spec.tracing.otlp_grpc_port, http2=True)
        )
    connection_manager: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "gateway",
        "route_config": {
            "name": "gateway",
            "virtual_hosts": [
                {
                    "name": "gateway",
                    "domains": ["*"],
                    "routes": _routes(spec, with_ext_authz=with_ext_authz),
                }
            ],
        },
        "http_filters": http_filters,
        **PATH_NORMALISATION,
    }
    access_logs = [_delivery_access_log()] if with_ext_authz else []
    if limits is not None and limits.rules:
        connection_manager["local_reply_config"] = refusal_reply_config(limits)
        access_logs.append(refusal_access_log(spec.refusal_log_dir or spec.persistence_dir))
    if access_logs:
        connection_manager["access_log"] = access_logs
    if spec.tracing:
        connection_manager["tracing"] = _tracing(spec.tracing, spec.enforcer_id)
    listener = {
        "name": "gateway",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": spec.envoy_port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": connection_manager,
                    }
                ]
            }
        ],
    }
    admin = {"socket_address": {"address": "127.0.0.1", "port_value": spec.envoy_admin_port}}
    return {
        "node": {"id": spec.enforcer_id, "cluster": spec.region},
        "admin": {"address": admin},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


class EnvoyProxy(ManagedProcess):
    """Envoy with a rendered bootstrap; ready when its admin endpoint says LIVE."""

    def __init__(
        self,
        envoy_bin: Path,
        workdir: Path,
        config: dict[str, Any],
        *,
        admin_port: int,
        name: str = "envoy",
    ) -> None:
        workdir = workdir.resolve()
        self.config_path = workdir / f"{name}.yaml"
        self.admin_port = admin_port
        self.config = config
        argv = [
            str(envoy_bin),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "2",
        ]
        super().__init__(name, argv, workdir)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        super().start()

    def start_and_wait(self, timeout_s: float = ENVOY_READY_TIMEOUT_S) -> None:
        self.start()
        self.wait_ready(lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/ready"), timeout_s)


def validate_envoy_config(envoy_bin: Path, config_path: Path) -> None:
    """``envoy --mode validate``; raise ConfigError with Envoy's message."""
    out = subprocess.run(
        [str(envoy_bin), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise ConfigError(
            f"envoy refused {config_path}: {(out.stderr or out.stdout).strip()[-2000:]}"
        )
