"""anomaly_holds: a tenant's spend anomaly held until an approver releases it

Revision ID: 0013_anomaly_holds
Revises: 0012_target_health
Create Date: 2026-12-03 19:10:00

The spend-anomaly watch opens one for a tenant whose budget names an ``onAnomaly``
action; the state bundle lists the open ones, where the policy applies the action.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_anomaly_holds"
down_revision = "0012_target_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anomaly_holds",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )


def downgrade() -> None:
    op.drop_table("anomaly_holds")
