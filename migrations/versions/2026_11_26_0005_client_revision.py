"""client revision: API clients move their own revision, not the policy's

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Creating or revoking an API client used to bump `policy_state.revision`, so
every replica recompiled its whole policy for a key change. This adds the
one-row `client_state` table: its revision is bumped by client changes only,
and a replica that sees it move reloads its callers without compiling.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    client_state = op.create_table(
        "client_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_state")),
    )
    op.bulk_insert(client_state, [{"id": 1, "revision": 0, "changed_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("client_state")
