"""tool approvals issued, and their one use

Revision ID: 0007_approval_consumption
Revises: 0006
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_approval_consumption"
down_revision = "0008_enforcer_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_approvals",
        sa.Column("token_id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("args_sha256", sa.String(length=64), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(length=200), nullable=True),
        sa.Column("decision_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("token_id"),
    )
    with op.batch_alter_table("tool_approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tool_approvals_expires_at"), ["expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("tool_approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tool_approvals_expires_at"))
    op.drop_table("tool_approvals")
