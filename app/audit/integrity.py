"""Proving the audit trail: verify the hash chain, and purge old rows behind checkpoints.

Neither holds up decisions. Verification reads one consistent snapshot of the
database and takes no lock; it checks rows up to the chain head it read first,
so rows committed while it runs are neither missed nor a break (every row up
to the head is committed, because the head moves in the transaction that
inserts the rows). A purge verifies the same way, without the write lock, then
deletes in short transactions of `PURGE_BATCH` rows, each recording its own
checkpoint and first re-checking, cheaply, that what it deletes is what the
verification saw.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from app.audit.chain import GENESIS, ChainStart, Verification, verify_rows
from app.errors import InvalidRequest
from app.store.tables import AuditChainHead, AuditCheckpoint, AuditDecision

READ_BATCH = 5000
# Rows deleted per purge transaction: on SQLite each holds the write lock, and
# so holds up audit commits, for as long as deleting this many rows takes
# (30 to 50 ms measured on one core, fsync included).
PURGE_BATCH = 2000


def _sqlite_in_transaction(connection: Connection) -> bool:
    raw = connection.connection.dbapi_connection
    return bool(cast(sqlite3.Connection, raw).in_transaction)


def _read_snapshot(connection: Connection) -> None:
    """Make the reads that follow on `connection` see one snapshot of the database.

    Only when the connection has not begun a transaction yet; a caller that has
    chose its own. PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite:
    a deferred BEGIN, so the first read fixes the snapshot (in WAL mode readers
    take no lock that holds up a writer).
    """
    if connection.in_transaction():
        return
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    elif connection.dialect.name == "sqlite":
        connection.begin()
        if not _sqlite_in_transaction(connection):  # pysqlite begins only before writes
            connection.exec_driver_sql("BEGIN")


@contextmanager
def _write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds SQLite's write lock from its first statement."""
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite" and not _sqlite_in_transaction(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


def _chain_start(connection: Connection) -> ChainStart:
    checkpoint = connection.execute(
        select(AuditCheckpoint.last_seq, AuditCheckpoint.last_hash)
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).first()
    return ChainStart(0, GENESIS) if checkpoint is None else ChainStart(*checkpoint)


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


def read_head(connection: Connection) -> ChainHead:
    head = connection.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash).where(AuditChainHead.id == 1)
    ).one()
    return ChainHead(int(head.last_seq), str(head.last_hash))


def head_decision_id(connection: Connection, head: ChainHead) -> str | None:
    """The decision the head points at; None once a purge has removed its row."""
    return connection.scalar(
        select(AuditDecision.decision_id).where(
            AuditDecision.seq == head.seq, AuditDecision.row_hash == head.hash
        )
    )


def _rows_between(
    connection: Connection, after_seq: int, upto_seq: int
) -> Iterator[Mapping[str, Any]]:
    """Every row with after_seq < seq <= upto_seq, in seq order, a bounded batch at a time."""
    while True:
        batch = (
            connection.execute(
                select(AuditDecision.__table__)
                .where(AuditDecision.seq > after_seq, AuditDecision.seq <= upto_seq)
                .order_by(AuditDecision.seq)
                .limit(READ_BATCH)
            )
            .mappings()
            .all()
        )
        yield from cast(list[Mapping[str, Any]], batch)
        if len(batch) < READ_BATCH:
            return
        after_seq = int(batch[-1]["seq"])


def _verify(
    connection: Connection, head: ChainHead, start: ChainStart, noting: dict[int, str]
) -> Verification:
    """Verify from `start` to `head`, keeping the row_hash of the rows `noting` names."""

    def note(rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in rows:
            if row["seq"] in noting:
                noting[row["seq"]] = row["row_hash"]
            yield row

    rows = _rows_between(connection, start.seq, head.seq)
    return verify_rows(
        note(rows) if noting else rows, start=start, head_seq=head.seq, head_hash=head.hash
    )


def verify_chain(connection: Connection) -> Verification:
    """Check every row from the last checkpoint to the head; name the first broken link.

    Rows above the head read first were committed after it and are left to the
    next verification.
    """
    _read_snapshot(connection)
    head = read_head(connection)
    return _verify(connection, head, _chain_start(connection), {})


@dataclass(frozen=True)
class Purge:
    last_seq: int
    rows_removed: int


@dataclass(frozen=True)
class _PurgePlan:
    start: ChainStart
    last_seq: int  # the last row to remove
    hashes: dict[int, str]  # row_hash of the last row of each batch, as verified


def _plan_purge(engine: Engine, before: datetime) -> _PurgePlan | None:
    """Verify the chain and choose the prefix to remove, in one snapshot, without locks."""
    with engine.connect() as connection:
        _read_snapshot(connection)
        head = read_head(connection)
        start = _chain_start(connection)
        first_kept = connection.execute(
            select(func.min(AuditDecision.seq)).where(
                AuditDecision.seq > start.seq,
                AuditDecision.seq <= head.seq,
                AuditDecision.decided_at >= before,
            )
        ).scalar_one()
        last_seq = head.seq if first_kept is None else int(first_kept) - 1
        ends = (*range(start.seq + PURGE_BATCH, last_seq, PURGE_BATCH), last_seq)
        hashes = dict.fromkeys((end for end in ends if end > start.seq), "")
        verification = _verify(connection, head, start, hashes)
    if verification.broken is not None:
        raise InvalidRequest("chain", f"is broken at row {verification.broken.seq}; purge refused")
    return _PurgePlan(start, last_seq, hashes) if last_seq > start.seq else None


def purge_before(engine: Engine, *, before: datetime, actor: str) -> Purge | None:
    """Remove the oldest rows decided before `before`, keeping the rest verifiable.

    Only a prefix of the chain can go: rows up to (not including) the first row
    decided at or after `before`. The chain is verified first, without the write
    lock; then the rows go `PURGE_BATCH` at a time, each batch in its own short
    transaction with a checkpoint naming its last row, whose hash commits to
    every row before it; verification starts from the newest checkpoint. Each
    transaction first checks that the newest checkpoint is the one it follows and
    that its last row has the hash the verification saw, and that it deleted
    exactly the rows it meant to; otherwise it removes nothing and the purge
    stops (what earlier batches removed stays removed, behind their checkpoints).

    `engine` must be an ordinary one (not `write_lock_at_begin`), or on SQLite
    the verification would hold the write lock.
    """
    if before > datetime.now(UTC):
        raise InvalidRequest("before", "is in the future: only past decisions can be purged")
    plan = _plan_purge(engine, before)
    if plan is None:
        return None
    previous, removed, took = plan.start, 0, 0.0
    for end, verified_hash in plan.hashes.items():
        if removed and engine.dialect.name == "sqlite":
            # Leave the write lock free between batches for as long as one took: the
            # audit writer waits for it by polling, and would otherwise keep missing it.
            time.sleep(took)
        began = time.monotonic()
        with _write_transaction(engine) as connection:
            if _chain_start(connection) != previous:
                raise InvalidRequest("chain", _stopped(removed, "another purge ran meanwhile"))
            row_hash = connection.scalar(
                select(AuditDecision.row_hash).where(AuditDecision.seq == end)
            )
            if row_hash != verified_hash:
                raise InvalidRequest("chain", _stopped(removed, f"row {end} changed"))
            if connection.dialect.name == "postgresql":
                # The append-only trigger's permission, for this transaction only.
                connection.execute(text("SET LOCAL accord.purge = 'on'"))
            deleted = connection.execute(
                delete(AuditDecision).where(AuditDecision.seq <= end)
            ).rowcount
            if deleted != end - previous.seq:
                raise InvalidRequest(
                    "chain",
                    _stopped(removed, f"{deleted} rows up to row {end}, not {end - previous.seq}"),
                )
            connection.execute(
                insert(AuditCheckpoint).values(
                    purged_before=before,
                    last_seq=end,
                    last_hash=verified_hash,
                    rows_removed=deleted,
                    created_at=datetime.now(UTC),
                    created_by=actor,
                )
            )
        previous, removed = ChainStart(end, verified_hash), removed + deleted
        took = time.monotonic() - began
    return Purge(last_seq=plan.last_seq, rows_removed=removed)


def _stopped(removed: int, why: str) -> str:
    return (
        f"changed after it was verified ({why}); purge stopped after removing {removed} rows, "
        "each batch behind its checkpoint; verify and run it again"
    )
