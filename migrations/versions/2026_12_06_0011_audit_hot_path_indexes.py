"""audit indexes for the hot path: fewer B-trees written per decision

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Every decision writes one audit row, and every index on the table is one more B-tree
written before the answer (docs/performance.md). The break-glass index now holds only
break-glass rows (the review queue and `break_glass=true` searches), the case-reference
index only rows that carry one, and the client index is dropped: a search by client
alone walks the newest rows first (`seq`), as a search on any unindexed column does.
A row that is neither break-glass nor carries a case reference now writes six B-trees,
not nine. On PostgreSQL the index on `decided_at` becomes a BRIN index: rows arrive in time
order, so a summary per block range answers time-range queries and retention's cut-off at
a fraction of a B-tree's size and write cost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "audit_decisions"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_audit_decisions_decided_at", table_name=TABLE)
        op.create_index(
            "ix_audit_decisions_decided_at", TABLE, ["decided_at"], postgresql_using="brin"
        )
    op.drop_index("ix_audit_decisions_client_seq", table_name=TABLE)
    op.drop_index("ix_audit_decisions_break_glass_seq", table_name=TABLE)
    op.drop_index("ix_audit_decisions_case_ref_seq", table_name=TABLE)
    op.create_index(
        "ix_audit_decisions_break_glass_seq",
        TABLE,
        ["seq"],
        sqlite_where=sa.text("break_glass IS 1"),
        postgresql_where=sa.text("break_glass IS true"),
    )
    op.create_index(
        "ix_audit_decisions_case_ref_seq",
        TABLE,
        ["case_ref", "seq"],
        sqlite_where=sa.text("case_ref IS NOT NULL"),
        postgresql_where=sa.text("case_ref IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_decisions_case_ref_seq", table_name=TABLE)
    op.drop_index("ix_audit_decisions_break_glass_seq", table_name=TABLE)
    op.create_index("ix_audit_decisions_case_ref_seq", TABLE, ["case_ref", "seq"])
    op.create_index("ix_audit_decisions_break_glass_seq", TABLE, ["break_glass", "seq"])
    op.create_index("ix_audit_decisions_client_seq", TABLE, ["client", "seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_audit_decisions_decided_at", table_name=TABLE)
        op.create_index("ix_audit_decisions_decided_at", TABLE, ["decided_at"])
