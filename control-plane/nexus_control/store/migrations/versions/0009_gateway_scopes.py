"""gateway token scopes: the tenants a gateway token may report usage for

Revision ID: 0009_gateway_scopes
Revises: 0006
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_gateway_scopes"
down_revision = "0007_approval_consumption"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing gateway tokens get no tenants: they may report for nobody until
    # an operator issues scoped ones (fail closed, not open).
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenants", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("tenants")
