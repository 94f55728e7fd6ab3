"""register change feed: register entries reach replicas as data, not compiled policy

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Every register write appends one row per entry it touched to
`register_changes`, numbered by `register_state.revision`: the writer bumps
that one row first, so its lock orders the numbers as the writes commit. A
replica reads only the changes after the last one it applied. Register
writes no longer move the policy revision, so no agreement is recompiled.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    register_state = op.create_table(
        "register_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_register_state")),
    )
    op.bulk_insert(register_state, [{"id": 1, "revision": 0, "changed_at": datetime.now(UTC)}])
    op.create_table(
        "register_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.String(length=128), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_register_changes")),
    )


def downgrade() -> None:
    op.drop_table("register_changes")
    op.drop_table("register_state")
