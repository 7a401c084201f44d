"""revisions built here from sources, signed on approval; the signing key ring

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:30:00

Existing revisions were signed by their authors' builds: their archive is
kept as both ``archive`` and ``content``, so they still serve and diff.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bundle_revisions", schema=None) as batch_op:
        batch_op.alter_column("archive", existing_type=sa.LargeBinary(), nullable=True)
        batch_op.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("sources", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("sources_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("signed_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE bundle_revisions SET content = archive WHERE content IS NULL")

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=500), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retire_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signing_keys_purpose"), ["purpose"], unique=False)
        batch_op.create_index(batch_op.f("ix_signing_keys_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_keys_state"))
        batch_op.drop_index(batch_op.f("ix_signing_keys_purpose"))
    op.drop_table("signing_keys")
    op.execute("DELETE FROM bundle_revisions WHERE archive IS NULL")
    with op.batch_alter_table("bundle_revisions", schema=None) as batch_op:
        batch_op.drop_column("signed_at")
        batch_op.drop_column("signed_by")
        batch_op.drop_column("sources_sha256")
        batch_op.drop_column("sources")
        batch_op.drop_column("content")
        batch_op.alter_column("archive", existing_type=sa.LargeBinary(), nullable=False)
