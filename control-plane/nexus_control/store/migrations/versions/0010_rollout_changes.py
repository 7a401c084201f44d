"""rollout changes: a rollout's diff as rows and a summary, so its page reads one page of it

Revision ID: 0010_rollout_changes
Revises: 0009_gateway_scopes
Create Date: 2026-12-03 09:30:00

Every existing rollout's stored diff is written out the way the control plane
writes a new one (`nexus_control.rollout.changes.record`): ordinals in the
page's order (widening, narrowing, then neutral changes, each in the diff's
order), one summary row with the counts by effect and area and the Rego
module changes. One rollout's diff is read at a time, and rows are inserted
in chunks, so memory stays bounded by the biggest single diff.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010_rollout_changes"
down_revision = "0009_gateway_scopes"
branch_labels = None
depends_on = None

_ORDER = ("widens", "narrows", "neutral")
_CHUNK = 5_000


def upgrade() -> None:
    op.create_table(
        "rollout_changes",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("effect", sa.String(length=16), nullable=False),
        sa.Column("area", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.PrimaryKeyConstraint("rollout_id", "ordinal"),
    )
    op.create_table(
        "rollout_diff_summaries",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("widens", sa.Integer(), nullable=False),
        sa.Column("narrows", sa.Integer(), nullable=False),
        sa.Column("neutral", sa.Integer(), nullable=False),
        sa.Column("by_area", sa.JSON(), nullable=False),
        sa.Column("modules", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.PrimaryKeyConstraint("rollout_id"),
    )
    _backfill(op.get_bind())


def _backfill(bind: sa.Connection) -> None:
    rollouts = sa.table("rollouts", sa.column("id", sa.Integer), sa.column("diff", sa.JSON))
    rows = sa.table(
        "rollout_changes",
        sa.column("rollout_id", sa.Integer),
        sa.column("ordinal", sa.Integer),
        sa.column("effect", sa.String),
        sa.column("area", sa.String),
        sa.column("subject", sa.Text),
        sa.column("detail", sa.Text),
    )
    summaries = sa.table(
        "rollout_diff_summaries",
        sa.column("rollout_id", sa.Integer),
        sa.column("widens", sa.Integer),
        sa.column("narrows", sa.Integer),
        sa.column("neutral", sa.Integer),
        sa.column("by_area", sa.JSON),
        sa.column("modules", sa.JSON),
    )
    ids = bind.execute(sa.select(rollouts.c.id).order_by(rollouts.c.id)).scalars().all()
    for rollout_id in ids:
        diff: Any = bind.execute(
            sa.select(rollouts.c.diff).where(rollouts.c.id == rollout_id)
        ).scalar_one()
        diff = diff if isinstance(diff, dict) else {}
        changes = sorted(diff.get("changes", []), key=lambda c: _ORDER.index(c["effect"]))
        counts = dict.fromkeys(_ORDER, 0)
        by_area: dict[str, dict[str, int]] = {}
        for change in changes:
            counts[change["effect"]] += 1
            area = by_area.setdefault(change["area"], {})
            area[change["effect"]] = area.get(change["effect"], 0) + 1
        bind.execute(
            summaries.insert().values(
                rollout_id=rollout_id,
                **counts,
                by_area=dict(sorted(by_area.items())),
                modules=list(diff.get("modules", [])),
            )
        )
        for start in range(0, len(changes), _CHUNK):
            bind.execute(
                rows.insert(),
                [
                    {
                        "rollout_id": rollout_id,
                        "ordinal": start + n,
                        "effect": c["effect"],
                        "area": c["area"],
                        "subject": c["subject"],
                        "detail": c["detail"],
                    }
                    for n, c in enumerate(changes[start : start + _CHUNK])
                ],
            )


def downgrade() -> None:
    op.drop_table("rollout_diff_summaries")
    op.drop_table("rollout_changes")
