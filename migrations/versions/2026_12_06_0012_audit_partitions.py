"""audit partitions (PostgreSQL): `audit_decisions` partitioned by month of `decided_at`;
signed verification records (`audit_verifications`) on every backend

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

PostgreSQL only, for the partitions: the table becomes a declarative RANGE-partitioned
table on `decided_at`, one partition a month (`audit_decisions_YYYY_MM`, from the first
instant of the month in UTC to the next) and a DEFAULT partition
(`audit_decisions_default`), the safety net for a row whose month has no partition yet
(app/audit/partitions.py makes them ahead of time and explains the choice). Existing
rows are copied into partitions made for every month they cover, the current month and
the next two. This rewrites the whole table: run it in a maintenance window.

A partitioned table's primary key and unique constraints must include the partition
key: the primary key becomes (seq, decided_at) and the unique constraint on
decision_id (decision_id, decided_at). `seq` is still unique in practice (the writer
numbers rows from the locked chain head) and decision ids are UUIDv7 made by the
writer's process with 74 random bits (app/runtime/ids.py); docs/audit.md says why the
loss of a database-enforced global uniqueness is safe. 0011's indexes are recreated on
the parent (and so on every partition), as are 0003's and 0004's guards: the row
trigger refusing UPDATE and DELETE is cloned to each partition (PostgreSQL 13+); as a
cloned trigger sees its partition's name, it now passes `'audit_decisions'` as its
argument and `accord_append_only()` honours `accord.purge` for it. A TRUNCATE trigger
is a statement trigger, which is not cloned, so every partition gets its own.

On every backend: `audit_verifications`, the signed records "verified up to row S with
hash H" that `accord audit verify` writes when it succeeds, from which
`accord audit verify --since-checkpoint` starts. Append-only like the checkpoints.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLE = "audit_decisions"
OLD = "audit_decisions_unpartitioned"
DEFAULT_PARTITION = "audit_decisions_default"
MONTHS_AHEAD = 2
SequenceNumber = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# 0003's function, as it was: restored on downgrade.
APPEND_ONLY_0003 = """
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
# The same, also for a partition's cloned trigger, which names its parent as argument.
APPEND_ONLY_0012 = """
CREATE OR REPLACE FUNCTION accord_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND (TG_TABLE_NAME = 'audit_decisions'
            OR (TG_NARGS > 0 AND TG_ARGV[0] = 'audit_decisions'))
       AND current_setting('accord.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'accord: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql
"""
INDEXES = (  # 0011's set
    "CREATE INDEX ix_audit_decisions_person_seq ON audit_decisions (person_id, seq)",
    "CREATE INDEX ix_audit_decisions_requester_seq ON audit_decisions (requester, seq)",
    "CREATE INDEX ix_audit_decisions_holder_seq ON audit_decisions (holder, seq)",
    "CREATE INDEX ix_audit_decisions_decided_at ON audit_decisions USING brin (decided_at)",
    "CREATE INDEX ix_audit_decisions_case_ref_seq ON audit_decisions (case_ref, seq) "
    "WHERE case_ref IS NOT NULL",
    "CREATE INDEX ix_audit_decisions_break_glass_seq ON audit_decisions (seq) "
    "WHERE break_glass IS true",
)


def _month(moment: datetime) -> tuple[int, int]:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.year, moment.month


def _next(month: tuple[int, int]) -> tuple[int, int]:
    year, number = month
    return (year + 1, 1) if number == 12 else (year, number + 1)


def _create_month(month: tuple[int, int]) -> None:
    (year, number), (next_year, next_number) = month, _next(month)
    name = f"{TABLE}_{year:04d}_{number:02d}"
    op.execute(
        f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES "
        f"FROM ('{year:04d}-{number:02d}-01 00:00:00+00') "
        f"TO ('{next_year:04d}-{next_number:02d}-01 00:00:00+00')"
    )
    _no_truncate(name)


def _no_truncate(table: str) -> None:
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION accord_append_only()"
    )


def _guard_parent(argument: str) -> None:
    op.execute(
        f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION accord_append_only({argument})"
    )
    _no_truncate(TABLE)


def _months_to_cover() -> list[tuple[int, int]]:
    bind = op.get_bind()
    oldest, newest = bind.execute(
        sa.text(f"SELECT min(decided_at), max(decided_at) FROM {OLD}")
    ).one()
    now = _month(datetime.now(UTC))
    ahead = now
    for _ in range(MONTHS_AHEAD):
        ahead = _next(ahead)
    first = min(now, _month(oldest)) if oldest is not None else now
    last = max(ahead, _month(newest)) if newest is not None else ahead
    months, month = [], first
    while month <= last:
        months.append(month)
        month = _next(month)
    return months


def _verifications_table() -> None:
    op.create_table(
        "audit_verifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("last_seq", SequenceNumber, nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("rows_checked", SequenceNumber, nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_by", sa.String(length=128), nullable=False),
        sa.Column("signature", sa.String(length=160), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_verifications")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_verifications_append_only BEFORE UPDATE OR DELETE "
            "ON audit_verifications FOR EACH ROW EXECUTE FUNCTION accord_append_only()"
        )
        _no_truncate("audit_verifications")


def upgrade() -> None:
    _verifications_table()
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(APPEND_ONLY_0012)
    op.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    op.execute(
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE (decided_at)"
    )
    for month in _months_to_cover():
        _create_month(month)
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")
    _no_truncate(DEFAULT_PARTITION)
    op.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD} ORDER BY seq")
    op.execute(f"ALTER SEQUENCE {TABLE}_seq_seq OWNED BY NONE")
    op.execute(f"DROP TABLE {OLD}")  # its indexes, constraints and triggers with it
    op.execute(f"ALTER SEQUENCE {TABLE}_seq_seq OWNED BY {TABLE}.seq")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_{TABLE} PRIMARY KEY (seq, decided_at)")
    op.execute(
        f"ALTER TABLE {TABLE} ADD CONSTRAINT uq_{TABLE}_decision_id "
        "UNIQUE (decision_id, decided_at)"
    )
    for index in INDEXES:
        op.execute(index)
    _guard_parent("'audit_decisions'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
        op.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD} ORDER BY seq")
        op.execute(f"ALTER SEQUENCE {TABLE}_seq_seq OWNED BY NONE")
        op.execute(f"DROP TABLE {OLD}")  # every partition with it
        op.execute(f"ALTER SEQUENCE {TABLE}_seq_seq OWNED BY {TABLE}.seq")
        op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_{TABLE} PRIMARY KEY (seq)")
        op.execute(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT uq_{TABLE}_decision_id UNIQUE (decision_id)"
        )
        for index in INDEXES:
            op.execute(index)
        _guard_parent("")
        op.execute(APPEND_ONLY_0003)
    op.drop_table("audit_verifications")
