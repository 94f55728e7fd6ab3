"""audit hash chain, break-glass reviews, purge checkpoints, append-only triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The chain format as this revision wrote it, frozen here: a migration never imports
# live app code, which may change after it (app/audit/chain.py is today's format).
GENESIS = "0" * 64
CHAINED_COLUMNS = (
    "seq",
    "decision_id",
    "request_id",
    "decided_at",
    "client",
    "requester",
    "holder",
    "person_id",
    "field",
    "purpose",
    "decision",
    "reason",
    "agreement_id",
    "agreement_version",
    "restriction_id",
    "consent_id",
    "break_glass",
    "justification",
    "user_ref",
    "case_ref",
    "policy_revision",
)


def _canonical_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} is not chained")


def row_hash(previous_hash: str, row: Any) -> str:
    """SHA-256 over the previous hash and the row's chained columns (as a JSON array)."""
    content = orjson.dumps(
        [row[column] for column in CHAINED_COLUMNS],
        default=_canonical_datetime,
        option=orjson.OPT_PASSTHROUGH_DATETIME,
    )
    return hashlib.sha256(previous_hash.encode() + content).hexdigest()


APPEND_ONLY_TABLES = ("audit_decisions", "break_glass_reviews", "audit_checkpoints")
# Rows are never changed; only `accord audit purge`, which records a checkpoint in
# the same transaction, may delete audit rows, and it says so with accord.purge.
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION accord_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_decisions'
       AND current_setting('accord.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'accord: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql
"""


def _chain_existing_rows() -> tuple[int, str]:
    """Hash rows written before the chain existed, in seq order."""
    bind = op.get_bind()
    columns = ", ".join(CHAINED_COLUMNS)
    previous, last_seq = GENESIS, 0
    query = sa.text(f"SELECT {columns} FROM audit_decisions ORDER BY seq").columns(
        decided_at=sa.DateTime(timezone=True), break_glass=sa.Boolean()
    )
    rows = bind.execute(query).mappings()
    for row in list(rows):
        content = dict(row)
        if content["decided_at"].tzinfo is None:
            content["decided_at"] = content["decided_at"].replace(tzinfo=UTC)
        digest = row_hash(previous, content)
        bind.execute(
            sa.text(
                "UPDATE audit_decisions SET prev_hash = :prev, row_hash = :hash WHERE seq = :seq"
            ),
            {"prev": previous, "hash": digest, "seq": row["seq"]},
        )
        previous, last_seq = digest, int(row["seq"])
    return last_seq, previous


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("purged_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "rows_removed", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "break_glass_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_reviews")),
    )
    with op.batch_alter_table("break_glass_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_break_glass_reviews_decision_id"), ["decision_id"], unique=False
        )

    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))

    head_seq, head_hash = _chain_existing_rows()
    op.bulk_insert(
        sa.table(
            "audit_chain_head",
            sa.column("id", sa.Integer()),
            sa.column("last_seq", sa.BigInteger()),
            sa.column("last_hash", sa.String()),
        ),
        [{"id": 1, "last_seq": head_seq, "last_hash": head_hash}],
    )

    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("row_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(
            "ix_audit_decisions_break_glass_seq", ["break_glass", "seq"], unique=False
        )
        batch_op.create_index("ix_audit_decisions_case_ref_seq", ["case_ref", "seq"], unique=False)
        batch_op.create_index("ix_audit_decisions_client_seq", ["client", "seq"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION accord_append_only()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS accord_append_only()")
    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_decisions_client_seq")
        batch_op.drop_index("ix_audit_decisions_case_ref_seq")
        batch_op.drop_index("ix_audit_decisions_break_glass_seq")
        batch_op.drop_column("row_hash")
        batch_op.drop_column("prev_hash")

    with op.batch_alter_table("break_glass_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_break_glass_reviews_decision_id"))

    op.drop_table("break_glass_reviews")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain_head")
