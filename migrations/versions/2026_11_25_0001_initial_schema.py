"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreement_versions",
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id", "version", name=op.f("pk_agreement_versions")),
    )
    op.create_table(
        "audit_decisions",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("requester", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("person_id", sa.String(length=128), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=True),
        sa.Column("agreement_version", sa.Integer(), nullable=True),
        sa.Column("restriction_id", sa.String(length=128), nullable=True),
        sa.Column("consent_id", sa.String(length=128), nullable=True),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("user_ref", sa.String(length=128), nullable=True),
        sa.Column("case_ref", sa.String(length=128), nullable=True),
        sa.Column("policy_revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_decisions")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_audit_decisions_decision_id")),
    )
    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_audit_decisions_decided_at", ["decided_at"], unique=False)
        batch_op.create_index("ix_audit_decisions_holder_seq", ["holder", "seq"], unique=False)
        batch_op.create_index("ix_audit_decisions_person_seq", ["person_id", "seq"], unique=False)
        batch_op.create_index(
            "ix_audit_decisions_requester_seq", ["requester", "seq"], unique=False
        )

    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_state")),
    )
    op.create_table(
        "register_entries",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("person_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("purposes", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_by", sa.String(length=128), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_register_entries")),
    )
    with op.batch_alter_table("register_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_register_entries_person_id"), ["person_id"], unique=False
        )

    policy_state = sa.table(
        "policy_state",
        sa.column("id", sa.Integer()),
        sa.column("revision", sa.Integer()),
        sa.column("changed_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        policy_state,
        [{"id": 1, "revision": 0, "changed_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    with op.batch_alter_table("register_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_register_entries_person_id"))

    op.drop_table("register_entries")
    op.drop_table("policy_state")
    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_decisions_requester_seq")
        batch_op.drop_index("ix_audit_decisions_person_seq")
        batch_op.drop_index("ix_audit_decisions_holder_seq")
        batch_op.drop_index("ix_audit_decisions_decided_at")

    op.drop_table("audit_decisions")
    op.drop_table("agreement_versions")
