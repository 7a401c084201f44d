"""stored tiles: each full C2SP tile kept as one row of 256 hashes

Revision ID: audit_0004
Revises: audit_0003
Create Date: 2026-12-02 05:30:00

Derived rows only (see `nexus_audit.tables.StoredTile`): tiles completed before
this revision are served from the hashes they are made of, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0004"
down_revision = "audit_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tiles",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("tile_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "tile_index"),
    )


def downgrade() -> None:
    op.drop_table("tiles")
