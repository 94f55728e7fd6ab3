"""The audit table's monthly partitions on PostgreSQL: made ahead of time, listed, checked.

Since migration 0012, `audit_decisions` on PostgreSQL is partitioned by RANGE of
`decided_at`, one partition a month (`audit_decisions_YYYY_MM`, from the first instant
of the month in UTC to the next), so retention drops whole months (a catalog change)
instead of deleting billions of rows one by one (app/audit/integrity.py). SQLite's
table is not partitioned: everything here is a no-op there.

**Why partitions ahead of time, and a DEFAULT partition too.** A row whose month has no
partition and no DEFAULT partition to fall into cannot be inserted: the audit commit
would fail, and with it every decision, closed (503), until someone made the partition.
So the service makes them ahead: `ensure_partitions` makes the current month's and the
next `MONTHS_AHEAD` months' partitions, at start and then daily (a follower task of
every replica; `accord audit partitions --create-ahead N` does it by hand), so a month's
partition exists two months before its first row. Should that still fail for months
(every replica down, or unable to run DDL), `audit_decisions_default` takes the rows
rather than refusing decisions. The DEFAULT partition is a safety net, not a place to
keep rows: it makes creating a partition for a month it holds rows of fail (PostgreSQL
refuses a partition that would leave rows of its range in the DEFAULT one), and
retention cannot drop it, only delete from it. So it is checked: `accord audit
partitions` lists every partition with its row estimate and warns when the DEFAULT one
holds rows, and the purge deletes its rows before the cut-off row by row, in the
transaction that drops the whole months (app/audit/integrity.py).

Making a partition takes a brief lock on the whole table (PostgreSQL's ACCESS
EXCLUSIVE on `audit_decisions` while it attaches), so it is done with a short lock
timeout and retried the next day; months ahead, a failed attempt costs nothing.
Replicas serialise on an advisory lock, and a partition that exists is not made again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = structlog.get_logger(__name__)

PARENT = "audit_decisions"
DEFAULT_PARTITION = "audit_decisions_default"
MONTHS_AHEAD = 2  # besides the current month
ENSURE_EVERY_SECONDS = 24 * 3600.0
# pg_advisory_xact_lock key: replicas making partitions take turns.
_ADVISORY_LOCK = 0x6163_636F_7264_0012
_MONTH_NAME = re.compile(rf"^{PARENT}_(\d{{4}})_(\d{{2}})$")


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month `moment` is in."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_{start.year:04d}_{start.month:02d}"


@dataclass(frozen=True)
class Partition:
    name: str
    bound: str  # as PostgreSQL states it: "DEFAULT" or "FOR VALUES FROM (…) TO (…)"
    start: datetime | None  # a month partition's range [start, end); None for others
    end: datetime | None
    estimated_rows: int | None  # the planner's estimate; None before the first ANALYZE

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_PARTITION


def is_partitioned(connection: Connection) -> bool:
    """Whether `audit_decisions` is a partitioned table (PostgreSQL since migration 0012)."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(
        connection.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relname = :parent AND pg_table_is_visible(c.oid))"
            ),
            {"parent": PARENT},
        )
    )


def list_partitions(connection: Connection) -> list[Partition]:
    """Every partition of `audit_decisions`, month partitions in order, then the others."""
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound, c.reltuples "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).all()
    partitions = []
    for name, bound, reltuples in rows:
        start = end = None
        match = _MONTH_NAME.match(name)
        if match:
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            end = next_month(start)
        estimate = None if reltuples is None or reltuples < 0 else int(reltuples)
        partitions.append(Partition(name, bound, start, end, estimate))
    last = datetime.max.replace(tzinfo=UTC)
    return sorted(partitions, key=lambda p: (p.start or last, p.is_default, p.name))


def default_partition_rows(connection: Connection) -> int:
    """How many rows the DEFAULT partition holds (it should hold none)."""
    return int(connection.scalar(text(f"SELECT count(*) FROM {DEFAULT_PARTITION}")) or 0)


def _create(connection: Connection, start: datetime) -> None:
    name, end = partition_name(start), next_month(start)
    connection.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES "
            f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    # The row guards are cloned from the parent; a TRUNCATE trigger is not (migration 0012).
    connection.execute(
        text(
            f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION accord_append_only()"
        )
    )


def ensure_partitions(
    engine: Engine, now: datetime | None = None, months_ahead: int = MONTHS_AHEAD
) -> list[str]:
    """Make the partitions of the month of `now` (default: the time now) and the
    `months_ahead` months after it that do not exist yet; return their names.

    Each in its own short transaction, under a lock timeout, so a partition that cannot
    be made now (a lock held too long, the DEFAULT partition holding rows of its month)
    is logged and left to the next call, and the others are still made. A no-op on
    SQLite and on an unpartitioned table.
    """
    if engine.dialect.name != "postgresql":
        return []
    first = month_start(now or datetime.now(UTC))
    months = [first]
    for _ in range(months_ahead):
        months.append(next_month(months[-1]))
    with engine.connect() as connection:
        if not is_partitioned(connection):
            return []
        existing = {partition.name for partition in list_partitions(connection)}
    created = []
    for start in months:
        name = partition_name(start)
        if name in existing:
            continue
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '2s'"))
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK}
                )
                exists = connection.scalar(
                    text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}
                )
                if not exists:
                    _create(connection, start)
                    created.append(name)
        except DBAPIError as exc:
            log.error(
                "audit partition not made",
                partition=name,
                error=str(getattr(exc, "orig", exc)).splitlines()[0],
            )
    if created:
        log.info("audit partitions made ahead", partitions=created)
    return created


def keep_partitions_ahead(engine: Engine) -> None:
    """What a replica's follower task runs daily: the partitions of this month and the
    next MONTHS_AHEAD, by the time now."""
    ensure_partitions(engine, datetime.now(UTC), MONTHS_AHEAD)
