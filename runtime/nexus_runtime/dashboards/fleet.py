"""Fleet and rollouts: is every region running its desired revision, and which enforcer is not.

Series from the control plane's ``/metrics``: convergence per region, enforcers by state,
how long a region has lagged its desired revision, one info series per expected enforcer
(held and active revision, state), its last-seen age, and the rollout in progress.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from nexus_runtime.dashboards._board import (
    Board,
    Query,
    Variable,
    stat_panel,
    table_panel,
    timeseries_panel,
)

__all__ = ["UID", "fleet"]

UID = "nexus-fleet"
REGION = Variable("region", "nexus_region_convergence_ratio", "Region")
_IN_REGION = '{region=~"$region"}'


def fleet() -> Board:
    return (
        Board(
            UID,
            "NexusAI policy: fleet and rollouts",
            "Convergence of each region's enforcers on its desired policy revision, "
            "enforcers by state, convergence lag, and the rollout in progress.",
            (REGION,),
        )
        .row("Convergence")
        .panel(
            stat_panel(
                "Convergence per region",
                "Share of the region's expected enforcers running its desired revision "
                "without error (nexus_region_convergence_ratio).",
                Query(
                    f"min by (region) (nexus_region_convergence_ratio{_IN_REGION})", "{{region}}"
                ),
                unit="percentunit",
                width=12,
            )
        )
        .panel(
            stat_panel(
                "Rollout state",
                "1 for the state of the rollout in progress (rolling, paused or waiting); "
                "all 0 when none is (nexus_rollout_active).",
                Query("max by (state) (nexus_rollout_active)", "{{state}}"),
                mappings={"0": ("no", "text"), "1": ("yes", "orange")},
                width=12,
            )
        )
        .panel(
            timeseries_panel(
                "Convergence ratio",
                "nexus_region_convergence_ratio over time: a dip is a rollout wave or an "
                "enforcer that stopped converging.",
                Query(
                    f"min by (region) (nexus_region_convergence_ratio{_IN_REGION})", "{{region}}"
                ),
                unit="percentunit",
            )
        )
        .panel(
            timeseries_panel(
                "Convergence lag",
                "Seconds the region has had a desired revision its enforcers do not all run; "
                "0 when converged (nexus_region_convergence_lag_seconds).",
                Query(
                    f"max by (region) (nexus_region_convergence_lag_seconds{_IN_REGION})",
                    "{{region}}",
                ),
                unit="s",
            )
        )
        .row("Enforcers")
        .panel(
            timeseries_panel(
                "Enforcers by state",
                "Expected enforcers per region and state (nexus_enforcers).",
                Query(
                    f"sum by (region, state) (nexus_enforcers{_IN_REGION})", "{{region}} {{state}}"
                ),
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Last seen age",
                "Seconds since each enforcer last reported its status "
                "(nexus_enforcer_last_seen_age_seconds).",
                Query(
                    f"max by (region, enforcer) (nexus_enforcer_last_seen_age_seconds{_IN_REGION})",
                    "{{region}} {{enforcer}}",
                ),
                unit="s",
            )
        )
        .panel(
            table_panel(
                "Enforcers: revisions and last seen",
                "One row per expected enforcer: the revision it holds, the one it runs, its "
                "state (nexus_enforcer_info) and seconds since it was last seen "
                "(nexus_enforcer_last_seen_age_seconds).",
                Query(
                    f"max by (region, enforcer, held_revision, active_revision, state) "
                    f"(nexus_enforcer_info{_IN_REGION})",
                    instant=True,
                    format=PromQueryFormat.TABLE,
                ),
                Query(
                    f"max by (region, enforcer) (nexus_enforcer_last_seen_age_seconds{_IN_REGION})",
                    instant=True,
                    format=PromQueryFormat.TABLE,
                ),
                hidden=("Time", "Value #A"),
            )
        )
    )
