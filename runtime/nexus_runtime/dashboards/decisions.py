"""Decisions and latency per capability: what the enforcers decide, how fast, and the SLOs.

Series from the enforcers' OPA ``/metrics`` (our ext_authz plugin): decisions by outcome,
route, tool, capability and deciding rule, the decision latency histogram per capability,
admission control (in flight, queue delay, shed), decisions per configured tenant; and the
recording rules generated from the SLOs spec (``nexus:capability_*``), whose error and slow
ratios are the two burn rates the SLO alerts page on.
"""

from __future__ import annotations

from nexus_runtime.dashboards._board import Board, Query, Variable, timeseries_panel

__all__ = ["UID", "decisions"]

UID = "nexus-decisions"
CAPABILITY = Variable("capability", "nexus_decisions_total", "Capability")
TENANT = Variable("tenant", "nexus_tenant_decisions_total", "Tenant")
_CAPABILITY = 'capability=~"$capability"'
_RATE = "[$__rate_interval]"
SLO_WINDOWS = ("5m", "1h")
"""The windows drawn of each SLO ratio: the fast page window and the one it is checked by."""


def _by(label: str) -> Query:
    return Query(
        f"sum by ({label}) (rate(nexus_decisions_total{{{_CAPABILITY}}}{_RATE}))",
        f"{{{{{label}}}}}",
    )


def _quantile(q: float) -> Query:
    return Query(
        f"histogram_quantile({q}, sum by (capability, le) "
        f"(rate(nexus_decision_duration_seconds_bucket{{{_CAPABILITY}}}{_RATE})))",
        f"p{round(q * 100)} {{{{capability}}}}",
    )


def _slo(ratio: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"max by (capability) (nexus:capability_{ratio}:rate{window}{{{_CAPABILITY}}})",
            f"{{{{capability}}}} {window}",
        )
        for window in SLO_WINDOWS
    )


def decisions() -> Board:
    return (
        Board(
            UID,
            "NexusAI policy: decisions and latency per capability",
            "What the enforcers decide (nexus_decisions_total), how fast "
            "(nexus_decision_duration_seconds), admission control, and the SLO burn ratios "
            "from the recording rules generated from the SLOs spec.",
            (CAPABILITY, TENANT),
        )
        .row("Decisions")
        .panel(
            timeseries_panel(
                "Decisions by outcome",
                "Decisions per second: allowed, denied, refused (by the plugin itself), shed "
                "(admission control) and error.",
                _by("outcome"),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions by capability",
                'Decisions per second per SLO capability ("none": no capability matches).',
                _by("capability"),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions by route",
                'Decisions per second per gateway route ("none": no known route).',
                _by("route"),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions by tool",
                'Decisions per second per tool of the Tools spec ("none" off tool routes, '
                '"other" past the label cap).',
                _by("tool"),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions by reason",
                'The deciding rule of a denial, the shed reason, "error", "refused"; '
                '"none" for allowed decisions.',
                _by("reason"),
                unit="reqps",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions per tenant",
                "Decisions per second by outcome, only for the tenants in the plugin's "
                "metric_tenants list (nexus_tenant_decisions_total).",
                Query(
                    'sum by (tenant, outcome) (rate(nexus_tenant_decisions_total{tenant=~"$tenant"}'
                    f"{_RATE}))",
                    "{{tenant}} {{outcome}}",
                ),
                unit="reqps",
            )
        )
        .row("Latency")
        .panel(
            timeseries_panel(
                "Decision latency by capability",
                "p50 and p99 of admission to answer inside the plugin "
                "(nexus_decision_duration_seconds).",
                _quantile(0.5),
                _quantile(0.99),
                unit="s",
                width=24,
            )
        )
        .row("SLOs")
        .panel(
            timeseries_panel(
                "Availability burn: error ratio",
                "(shed + error) / all decisions per capability, over 5m and 1h "
                "(nexus:capability_error_ratio:rate*).",
                *_slo("error_ratio"),
                unit="percentunit",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Latency burn: slow ratio",
                "Share of decisions slower than the capability's latency objective, over 5m "
                "and 1h (nexus:capability_slow_ratio:rate*).",
                *_slo("slow_ratio"),
                unit="percentunit",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Decisions per capability (SLO rule)",
                "Decisions per second per capability over 5m "
                "(nexus:capability_decisions:rate5m), the denominator of both ratios.",
                Query(
                    f"max by (capability) (nexus:capability_decisions:rate5m{{{_CAPABILITY}}})",
                    "{{capability}}",
                ),
                unit="reqps",
                width=8,
            )
        )
        .row("Admission control")
        .panel(
            timeseries_panel(
                "Shed by reason",
                "Checks refused by admission control per second (nexus_extauthz_shed_total).",
                Query(f"sum by (reason) (rate(nexus_extauthz_shed_total{_RATE}))", "{{reason}}"),
                unit="reqps",
                stacked=True,
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Decision log on the request path",
                "p50 and p99 of the time a Check spent handing its decision to the decision "
                "log before answering; with the durable log waiting, until the fsync "
                "(nexus_extauthz_decision_log_seconds).",
                *(
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(nexus_extauthz_decision_log_seconds_bucket{_RATE})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "In flight",
                "Checks admitted and not yet answered, per enforcer (nexus_extauthz_in_flight).",
                Query("sum by (instance) (nexus_extauthz_in_flight)", "{{instance}}"),
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Queue delay",
                "p50 and p99 of the time a Check waited for admission "
                "(nexus_extauthz_queue_delay_seconds).",
                *(
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(nexus_extauthz_queue_delay_seconds_bucket{_RATE})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
                width=8,
            )
        )
    )
