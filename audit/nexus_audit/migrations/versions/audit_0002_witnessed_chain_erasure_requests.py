"""witnessed checkpoints, erasure requests, dead letters, decision content MACs

Revision ID: audit_0002
Revises: audit_0001
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None

_INDEX = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.add_column(sa.Column("cosigned_note", sa.Text(), nullable=True))
    with op.batch_alter_table("leaves") as batch_op:
        batch_op.add_column(sa.Column("content_mac", sa.LargeBinary(), nullable=True))
    op.create_table(
        "witness_sizes",
        sa.Column("witness", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("witness"),
    )
    op.create_table(
        "log_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=160), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requester_id", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("keys_destroyed", sa.Integer(), nullable=True),
        sa.Column("payloads_erased", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", _INDEX, autoincrement=True, nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_id"),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("erasure_requests")
    op.drop_table("log_secrets")
    op.drop_table("witness_sizes")
    with op.batch_alter_table("leaves") as batch_op:
        batch_op.drop_column("content_mac")
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.drop_column("cosigned_note")
