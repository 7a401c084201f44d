"""target_health: the last reported health of each model or provider per region

Revision ID: 0012_target_health
Revises: 0011_evaluations
Create Date: 2026-12-03 16:40:00

A probe posts it (``POST /v1/health/models``); models or providers reported
degraded or down go into the state bundle, where the policy routes around them.
One row per (kind, target, region), overwritten by a newer observation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_target_health"
down_revision = "0011_evaluations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "target_health",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reporter", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("kind", "target", "region"),
    )


def downgrade() -> None:
    op.drop_table("target_health")
