"""decision search: facets, rules, evidence per control and day, the indexer's position

Revision ID: audit_0003
Revises: audit_0002
Create Date: 2026-12-02 10:00:00

Lookup tables only: every row is derived from a leaf's entry (and the rule
names of its payload) by `nexus_audit.search.index_decisions`, which starts
from leaf 0, so an existing log is indexed by the first run after upgrading.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None

_INDEX = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "decision_facets",
        sa.Column("leaf_index", _INDEX, autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(length=160), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("route", sa.String(length=512), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("http_status", sa.SmallInteger(), nullable=True),
        sa.PrimaryKeyConstraint("leaf_index"),
    )
    op.create_index("ix_decision_facets_time", "decision_facets", ["time"])
    op.create_index("ix_decision_facets_tenant", "decision_facets", ["tenant", "leaf_index"])
    op.create_index("ix_decision_facets_route", "decision_facets", ["route", "leaf_index"])
    op.create_index("ix_decision_facets_tool", "decision_facets", ["tool", "leaf_index"])
    op.create_table(
        "decision_rules",
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("leaf_index", _INDEX, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("rule", "leaf_index"),
    )
    op.create_table(
        "control_days",
        sa.Column("control", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("control", "day", "outcome"),
    )
    op.create_index(
        "ix_leaf_controls_control_kind",
        "leaf_controls",
        ["control", "kind", "leaf_index", "time"],
    )
    state = op.create_table(
        "search_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("indexed_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "indexed_size": 0}])


def downgrade() -> None:
    op.drop_table("search_state")
    op.drop_index("ix_leaf_controls_control_kind", table_name="leaf_controls")
    op.drop_table("control_days")
    op.drop_table("decision_rules")
    op.drop_index("ix_decision_facets_tool", table_name="decision_facets")
    op.drop_index("ix_decision_facets_route", table_name="decision_facets")
    op.drop_index("ix_decision_facets_tenant", table_name="decision_facets")
    op.drop_index("ix_decision_facets_time", table_name="decision_facets")
    op.drop_table("decision_facets")
