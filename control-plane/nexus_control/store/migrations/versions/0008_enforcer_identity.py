"""enforcer identity: principals, declared enforcers, authors by principal

Revision ID: 0008_enforcer_identity
Revises: 0006
Create Date: 2026-12-02 01:10:00

Existing tokens get one principal per distinct name (folded), existing
rollouts and approvals the principal of their name, and every enforcer the
control plane already knows (and that was not removed) a registration, so an
upgrade keeps a working fleet; an operator removes any phantom left behind.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008_enforcer_identity"
down_revision = "0006"
branch_labels = None
depends_on = None


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name_key"),
    )
    op.create_table(
        "enforcer_registrations",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("enforcer_registrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enforcer_registrations_region"), ["region"])
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_principal", sa.String(length=36), nullable=True))
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approver_principal", sa.String(length=36), nullable=True))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("principal_id", sa.String(length=36), nullable=True))

    bind = op.get_bind()
    now = datetime.now(UTC)
    tokens = sa.table(
        "api_tokens",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("principal_id", sa.String),
    )
    principals = sa.table(
        "principals",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    by_key: dict[str, str] = {}
    for token_id, name in bind.execute(sa.select(tokens.c.id, tokens.c.name)).all():
        key = _name_key(name)
        if key not in by_key:
            by_key[key] = str(uuid.uuid4())
            bind.execute(
                principals.insert().values(id=by_key[key], name=name, name_key=key, created_at=now)
            )
        bind.execute(
            tokens.update().where(tokens.c.id == token_id).values(principal_id=by_key[key])
        )
    for table, name_column, principal_column in (
        ("rollouts", "created_by", "created_by_principal"),
        ("approvals", "approver", "approver_principal"),
    ):
        rows = sa.table(
            table,
            sa.column("id", sa.Integer),
            sa.column(name_column, sa.String),
            sa.column(principal_column, sa.String),
        )
        for row_id, name in bind.execute(sa.select(rows.c.id, rows.c[name_column])).all():
            principal = by_key.get(_name_key(name))
            if principal is not None:
                bind.execute(
                    rows.update().where(rows.c.id == row_id).values({principal_column: principal})
                )
    enforcers = sa.table(
        "enforcers",
        sa.column("id", sa.String),
        sa.column("region", sa.String),
        sa.column("removed_at", sa.DateTime(timezone=True)),
    )
    registrations = sa.table(
        "enforcer_registrations",
        sa.column("id", sa.String),
        sa.column("region", sa.String),
        sa.column("registered_at", sa.DateTime(timezone=True)),
        sa.column("registered_by", sa.String),
    )
    known = bind.execute(
        sa.select(enforcers.c.id, enforcers.c.region).where(enforcers.c.removed_at.is_(None))
    ).all()
    for enforcer_id, region in known:
        bind.execute(
            registrations.insert().values(
                id=enforcer_id, region=region, registered_at=now, registered_by="migration 0008"
            )
        )

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("principal_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_index(batch_op.f("ix_api_tokens_principal_id"), ["principal_id"])
        batch_op.create_foreign_key(
            "fk_api_tokens_principal_id", "principals", ["principal_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint("fk_api_tokens_principal_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_tokens_principal_id"))
        batch_op.drop_column("principal_id")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("approver_principal")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("created_by_principal")
    with op.batch_alter_table("enforcer_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enforcer_registrations_region"))
    op.drop_table("enforcer_registrations")
    op.drop_table("principals")
