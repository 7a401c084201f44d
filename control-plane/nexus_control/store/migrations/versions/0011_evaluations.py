"""evaluations: offline evaluation results of prompt versions and models, for quality gates

Revision ID: 0011_evaluations
Revises: 0010_rollout_changes
Create Date: 2026-12-03 12:00:00

An evaluator posts them (``POST /v1/evaluations``); publishing reads the latest
one of each prompt version or model its rollout routes traffic to. Rows are
never updated; the index serves "the latest of one subject".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_evaluations"
down_revision = "0010_rollout_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=True),
        sa.Column("safety_score", sa.Float(), nullable=False),
        sa.Column("hallucination_rate", sa.Float(), nullable=False),
        sa.Column("p95_latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_per_call_usd", sa.Float(), nullable=False),
        sa.Column("dataset_id", sa.String(length=128), nullable=False),
        sa.Column("dataset_size", sa.Integer(), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluator", sa.String(length=200), nullable=False),
        sa.Column("evaluator_principal", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_evaluations_subject",
        "evaluations",
        ["kind", "subject", "version", "evaluated_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_evaluations_subject", table_name="evaluations")
    op.drop_table("evaluations")
