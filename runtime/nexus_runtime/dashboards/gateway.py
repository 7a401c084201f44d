"""The enforcers' Envoy: what clients got, how long it took, and what ext_authz answered.

Series from each enforcer's Envoy admin ``/stats/prometheus`` as Envoy names them: the
gateway listener's connection manager (stat prefix ``gateway``), the ext_authz filter's
counters, and the ``upstream`` (the gateway's backend) and ``opa`` (our plugin) clusters.
The policy's own view of the same requests is on the decisions dashboard; a gap between the
two (Envoy's ext_authz errors or timeouts against the plugin's answers) is what this board
is for.
"""

from __future__ import annotations

from nexus_runtime.dashboards._board import Board, Query, stat_panel, timeseries_panel

__all__ = ["UID", "gateway"]

UID = "nexus-gateway"
_RATE = "[$__rate_interval]"
_GATEWAY = 'envoy_http_conn_manager_prefix="gateway"'
_EXT_AUTHZ_ANSWERS = ("ok", "denied", "error", "failure_mode_allowed")


def _rate(metric: str, by: str = "") -> str:
    grouped = f" by ({by})" if by else ""
    return f"sum{grouped} (rate({metric}{{{_GATEWAY}}}{_RATE}))"


def _quantiles(metric: str, by: str, selector: str) -> tuple[Query, ...]:
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by + ', ' if by else ''}le) "
            f"(rate({metric}{{{selector}}}{_RATE})))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


def gateway() -> Board:
    return (
        Board(
            UID,
            "NexusAI policy: gateway (Envoy)",
            "What the enforcers' Envoy answered clients, its latency, and what ext_authz "
            "returned: the proxy's side of every decision.",
            (),
        )
        .row("Clients")
        .panel(
            stat_panel(
                "Requests per second",
                "Downstream requests on the gateway listener (envoy_http_downstream_rq_total).",
                Query(_rate("envoy_http_downstream_rq_total"), "rps"),
                unit="reqps",
                width=8,
            )
        )
        .panel(
            stat_panel(
                "Share answered 5xx",
                "Downstream responses with a 5xx code over all (envoy_http_downstream_rq_xx): "
                "includes ext_authz failures Envoy turned into 503.",
                Query(
                    f"sum (rate(envoy_http_downstream_rq_xx{{{_GATEWAY},"
                    f'envoy_response_code_class="5"}}{_RATE})) / '
                    f"clamp_min({_rate('envoy_http_downstream_rq_xx')}, 1e-9)",
                    "5xx",
                ),
                unit="percentunit",
                width=8,
            )
        )
        .panel(
            stat_panel(
                "ext_authz errors per second",
                "Checks Envoy could not get an answer for (timeouts, plugin unreachable): each "
                "one a 503 or, if failure mode allows, an unchecked request "
                "(envoy_http_ext_authz_error, envoy_http_ext_authz_failure_mode_allowed).",
                Query(_rate("envoy_http_ext_authz_error"), "error"),
                Query(_rate("envoy_http_ext_authz_failure_mode_allowed"), "failure mode allowed"),
                unit="reqps",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Responses by code class",
                "Downstream responses per second by class (envoy_http_downstream_rq_xx).",
                Query(
                    _rate("envoy_http_downstream_rq_xx", "envoy_response_code_class"),
                    "{{envoy_response_code_class}}xx",
                ),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Request latency",
                "Downstream request time on the gateway listener, ext_authz and upstream "
                "included (envoy_http_downstream_rq_time).",
                *_quantiles("envoy_http_downstream_rq_time_bucket", "", _GATEWAY),
                unit="ms",
            )
        )
        .row("ext_authz and clusters")
        .panel(
            timeseries_panel(
                "ext_authz answers",
                "What the ext_authz filter got per second: allowed, denied, error (no "
                "answer in time), and let through by failure mode (envoy_http_ext_authz_*).",
                *(
                    Query(_rate(f"envoy_http_ext_authz_{answer}"), answer)
                    for answer in _EXT_AUTHZ_ANSWERS
                ),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Cluster latency",
                "Time to the upstream's (the gateway backend's) and the plugin's (opa) "
                "response per cluster (envoy_cluster_upstream_rq_time).",
                *_quantiles(
                    "envoy_cluster_upstream_rq_time_bucket",
                    "envoy_cluster_name",
                    'envoy_cluster_name=~"upstream|opa"',
                ),
                unit="ms",
            )
        )
        .panel(
            timeseries_panel(
                "Cluster timeouts and resets",
                "Requests per cluster that timed out or were reset "
                "(envoy_cluster_upstream_rq_timeout, envoy_cluster_upstream_rq_rx_reset).",
                Query(
                    "sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_timeout"
                    f'{{envoy_cluster_name=~"upstream|opa"}}{_RATE}))',
                    "{{envoy_cluster_name}} timeout",
                ),
                Query(
                    "sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_rx_reset"
                    f'{{envoy_cluster_name=~"upstream|opa"}}{_RATE}))',
                    "{{envoy_cluster_name}} reset",
                ),
                unit="reqps",
            )
        )
    )
