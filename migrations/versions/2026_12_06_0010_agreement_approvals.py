"""sign-off before activation: approvals of agreement versions by their party agencies

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

With ACCORD_REQUIRE_SIGNOFF an agreement version becomes active only once a
named signatory of every party agency has approved it. `agreement_approvals`
holds those approvals, one per (agreement, version, agency), append-only (on
PostgreSQL the trigger function of revision 0003 refuses UPDATE and DELETE).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreement_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("agency", sa.String(length=128), nullable=False),
        sa.Column("signatory", sa.String(length=128), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id", "version"],
            ["agreement_versions.agreement_id", "agreement_versions.version"],
            name=op.f("fk_agreement_approvals_agreement_id_agreement_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_approvals")),
        sa.UniqueConstraint(
            "agreement_id", "version", "agency", name=op.f("uq_agreement_approvals_agreement_id")
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER agreement_approvals_append_only BEFORE UPDATE OR DELETE "
            "ON agreement_approvals FOR EACH ROW EXECUTE FUNCTION accord_append_only()"
        )


def downgrade() -> None:
    op.drop_table("agreement_approvals")  # its trigger goes with it
