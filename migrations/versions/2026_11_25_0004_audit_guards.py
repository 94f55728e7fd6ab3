"""guard the audit tables against TRUNCATE, and the chain head against being reset

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Migration 0003's row triggers do not fire on TRUNCATE, and left the chain head
unguarded. On PostgreSQL this adds:

- a statement-level `BEFORE TRUNCATE` trigger on `audit_decisions`,
  `audit_chain_head`, `audit_checkpoints` and `break_glass_reviews`, running
  0003's `accord_append_only()`, which refuses anything but a row `DELETE` on
  `audit_decisions` under `accord.purge` (so TRUNCATE is always refused);
- a row trigger on `audit_chain_head` that refuses `INSERT` and `DELETE`, and
  lets an `UPDATE` only move the head forward to a row that exists with that
  hash, which is what the audit writer does (a purge never touches the head).

`audit_checkpoints` already refuses every `UPDATE` and `DELETE` (0003); the
purge only inserts checkpoints, so no exception is made for it.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NO_TRUNCATE_TABLES = (
    "audit_decisions",
    "audit_chain_head",
    "audit_checkpoints",
    "break_glass_reviews",
)
HEAD_FUNCTION = """
CREATE OR REPLACE FUNCTION accord_chain_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'accord: audit_chain_head is moved only by the audit writer (% refused)',
            TG_OP;
    END IF;
    IF NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'accord: audit_chain_head is one row, id 1 (UPDATE refused)';
    END IF;
    IF NEW.last_seq = OLD.last_seq AND NEW.last_hash = OLD.last_hash THEN
        RETURN NEW;
    END IF;
    IF NEW.last_seq <= OLD.last_seq THEN
        RAISE EXCEPTION 'accord: audit_chain_head cannot go backwards or be rewritten '
            '(row % to row % refused)', OLD.last_seq, NEW.last_seq;
    END IF;
    PERFORM 1 FROM audit_decisions WHERE seq = NEW.last_seq AND row_hash = NEW.last_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'accord: audit_chain_head must name an audit row: no row % with hash % '
            '(UPDATE refused)', NEW.last_seq, NEW.last_hash;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in NO_TRUNCATE_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION accord_append_only()"
        )
    op.execute(HEAD_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_chain_head_forward_only "
        "BEFORE INSERT OR UPDATE OR DELETE ON audit_chain_head "
        "FOR EACH ROW EXECUTE FUNCTION accord_chain_head_forward_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS audit_chain_head_forward_only ON audit_chain_head")
    op.execute("DROP FUNCTION IF EXISTS accord_chain_head_forward_only()")
    for table in NO_TRUNCATE_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
