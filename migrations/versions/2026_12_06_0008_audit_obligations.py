"""audit obligations and routes: a permit's obligations and the lawful routes a deny offered
are recorded and chained (chain format 2)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

`audit_decisions.obligations` holds the obligations a permit was given on (a JSON
list of `{"field", "mask"}`; `[]` for none), `routes_offered` the kinds of lawful
route a deny offered (`["consent", "break-glass"]`; `[]` for none). `chain_version`
says which columns a row's hash covers (app/audit/chain.py): rows already written
are format 1, which does not cover them (theirs stay NULL: not recorded); the writer
writes format 2, which covers `chain_version`, `obligations` and `routes_offered`
too. Verification checks each row by its own format, so the old rows still verify.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_decisions") as batch:
        batch.add_column(sa.Column("obligations", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("routes_offered", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("chain_version", sa.Integer(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_decisions") as batch:
        batch.drop_column("chain_version")
        batch.drop_column("routes_offered")
        batch.drop_column("obligations")
