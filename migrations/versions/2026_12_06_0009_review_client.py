"""accountable reviews: a break-glass review names the reviewing person and the client

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

`break_glass_reviews.reviewer` now holds the person who reviewed (required in
the API), and the new `client` column the API client that sent the review.
Reviews recorded before this revision have `client` NULL: their `reviewer` is
the client, since no person was asked for (reviews are append-only, so they
are not rewritten).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("break_glass_reviews") as batch:
        batch.add_column(sa.Column("client", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("break_glass_reviews") as batch:
        batch.drop_column("client")
