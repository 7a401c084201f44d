"""Audit log health: is every decision reaching the log, and is the log signed and witnessed.

Series from the audit service's ``/v1/audit/metrics`` (tree and checkpoint sizes, checkpoint
age, outbox, quorum, chain, security events, refused uploads) and from the enforcers' OPA
``/metrics`` (the durable decision log: events buffered on disk, the oldest unshipped,
upload retries, fsync latency). Unsigned leaves are the tree's size less the latest signed
checkpoint's: leaves no signature covers yet.
"""

from __future__ import annotations

from nexus_runtime.dashboards._board import (
    Board,
    Query,
    heatmap_panel,
    stat_panel,
    timeseries_panel,
)

__all__ = ["UID", "audit"]

UID = "nexus-audit"
_RATE = "[$__rate_interval]"
_FLAG = {"0": ("ok", "green"), "1": ("ALERT", "red")}


def audit() -> Board:
    return (
        Board(
            UID,
            "NexusAI policy: audit log health",
            "The Merkle audit log (size, signed checkpoints, witnesses, outbox) and the "
            "enforcers' durable decision logs that feed it.",
        )
        .row("Log and checkpoints")
        .panel(
            stat_panel(
                "Tree size",
                "Leaves in the log (nexus_audit_tree_size).",
                Query("max(nexus_audit_tree_size)", "leaves"),
            )
        )
        .panel(
            stat_panel(
                "Checkpoint size",
                "Leaves covered by the latest signed checkpoint (nexus_audit_checkpoint_size).",
                Query("max(nexus_audit_checkpoint_size)", "leaves"),
            )
        )
        .panel(
            stat_panel(
                "Unsigned leaves",
                "Tree size less checkpoint size: leaves no signed checkpoint covers yet.",
                Query("max(nexus_audit_tree_size) - max(nexus_audit_checkpoint_size)", "leaves"),
            )
        )
        .panel(
            stat_panel(
                "Checkpoint age",
                "Seconds since the latest checkpoint was signed "
                "(nexus_audit_checkpoint_age_seconds).",
                Query("max(nexus_audit_checkpoint_age_seconds)", "age"),
                unit="s",
            )
        )
        .panel(
            stat_panel(
                "Chain broken",
                "1 while the tree does not extend the last signed checkpoint "
                "(nexus_audit_chain_broken).",
                Query("max(nexus_audit_chain_broken)", "chain"),
                mappings=_FLAG,
            )
        )
        .panel(
            stat_panel(
                "Witness quorum missed",
                "1 while the latest checkpoint lacks its witness quorum "
                "(nexus_audit_quorum_missed).",
                Query("max(nexus_audit_quorum_missed)", "quorum"),
                mappings=_FLAG,
            )
        )
        .panel(
            stat_panel(
                "Checkpoint signers",
                "Processes signing checkpoints; exactly 1 is healthy (nexus_audit_signer_leader).",
                Query("sum(nexus_audit_signer_leader)", "signers"),
            )
        )
        .panel(
            stat_panel(
                "Outbox pending",
                "Outbox events not yet drained (nexus_audit_outbox_pending).",
                Query("max(nexus_audit_outbox_pending)", "pending"),
            )
        )
        .panel(
            timeseries_panel(
                "Tree and checkpoint size",
                "The gap between the two lines is the unsigned leaves.",
                Query("max(nexus_audit_tree_size)", "tree"),
                Query("max(nexus_audit_checkpoint_size)", "checkpoint"),
            )
        )
        .panel(
            timeseries_panel(
                "Checkpoint age and outbox",
                "Seconds since the latest checkpoint, and outbox events pending.",
                Query("max(nexus_audit_checkpoint_age_seconds)", "checkpoint age (s)"),
                Query("max(nexus_audit_outbox_pending)", "outbox pending"),
            )
        )
        .row("Intake")
        .panel(
            timeseries_panel(
                "Security events",
                "Security events logged, by kind (nexus_audit_security_events_total): a "
                "decision id sent again with other content, an upload naming other enforcers.",
                Query(
                    f"sum by (kind) (increase(nexus_audit_security_events_total{_RATE}))",
                    "{{kind}}",
                ),
            )
        )
        .panel(
            timeseries_panel(
                "Uploads refused",
                "Decision-log uploads refused per second, by reason "
                "(nexus_audit_uploads_refused_total).",
                Query(
                    f"sum by (reason) (rate(nexus_audit_uploads_refused_total{_RATE}))",
                    "{{reason}}",
                ),
                unit="reqps",
            )
        )
        .row("Enforcers' decision logs")
        .panel(
            timeseries_panel(
                "Buffered events",
                "Decision events on each enforcer's disk not yet acknowledged by the intake "
                "(nexus_decision_log_buffered_events).",
                Query("sum by (instance) (nexus_decision_log_buffered_events)", "{{instance}}"),
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Oldest unshipped",
                "Age of each enforcer's oldest segment not yet acknowledged; 0: none "
                "(nexus_decision_log_oldest_unshipped_age_seconds).",
                Query(
                    "max by (instance) (nexus_decision_log_oldest_unshipped_age_seconds)",
                    "{{instance}}",
                ),
                unit="s",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Shipped, refused and retried",
                "Events acknowledged and refused (write: not recorded, the request was "
                "refused; intake: kept in refused/), and uploads retried, per second.",
                Query(f"sum(rate(nexus_decision_log_shipped_events_total{_RATE}))", "shipped"),
                Query(
                    f"sum by (reason) (rate(nexus_decision_log_refused_events_total{_RATE}))",
                    "refused {{reason}}",
                ),
                Query(f"sum(rate(nexus_decision_log_upload_retries_total{_RATE}))", "retries"),
                unit="ops",
                width=8,
            )
        )
        .panel(
            timeseries_panel(
                "Group-commit fsync latency",
                "p50 and p99 of one group commit's fsync (nexus_decision_log_fsync_seconds).",
                *(
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(nexus_decision_log_fsync_seconds_bucket{_RATE})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
            )
        )
        .panel(
            heatmap_panel(
                "Group-commit fsync histogram",
                "Group commits per fsync latency bucket (nexus_decision_log_fsync_seconds): "
                "a slow disk shows as a band moving up.",
                Query(
                    f"sum by (le) (increase(nexus_decision_log_fsync_seconds_bucket{_RATE}))",
                    "{{le}}",
                ),
                unit="s",
            )
        )
    )
