"""disabled_tenants.period holds a budget window's key, not only a month

Revision ID: 0014_budget_windows
Revises: 0013_anomaly_holds
Create Date: 2026-12-07 23:45:00

A tenant is disabled for its budget window, named by the window's key: ``2026-03`` for a
month (what the column held so far), ``2026-W10``, ``2026-03-02`` or ``2026-03-02/P14D``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_budget_windows"
down_revision = "0013_anomaly_holds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("disabled_tenants", schema=None) as batch_op:
        batch_op.alter_column(
            "period", existing_type=sa.String(length=7), type_=sa.String(length=16)
        )


def downgrade() -> None:
    # Rows of windows other than a month do not fit the narrower column: they go first.
    op.execute("DELETE FROM disabled_tenants WHERE length(period) > 7")
    with op.batch_alter_table("disabled_tenants", schema=None) as batch_op:
        batch_op.alter_column(
            "period", existing_type=sa.String(length=16), type_=sa.String(length=7)
        )
