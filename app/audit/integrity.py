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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from app.audit.chain import (
    GENESIS,
    BrokenLink,
    ChainHead,
    ChainStart,
    Checkpoint,
    SignatureCheck,
    Verification,
    VerifiedUpTo,
    chain_start,
    row_hash,
    verify_rows,
)
from app.audit.partitions import DEFAULT_PARTITION, PARENT, is_partitioned, list_partitions
from app.audit.signing import AuditSigner, KeyRing
from app.errors import InvalidRequest
from app.store.tables import AuditChainHead, AuditCheckpoint, AuditDecision, AuditVerification

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


def _checkpoints(connection: Connection) -> list[Checkpoint]:
    """Every purge checkpoint, oldest first."""
    rows = connection.execute(
        select(AuditCheckpoint.__table__).order_by(AuditCheckpoint.last_seq, AuditCheckpoint.id)
    ).mappings()
    return [Checkpoint(**row) for row in rows]


def _newest_checkpoint(connection: Connection) -> ChainStart:
    """Where the newest checkpoint leaves the chain, unchecked: a purge batch's guard
    against a concurrent purge, after the purge has verified."""
    checkpoint = connection.execute(
        select(AuditCheckpoint.last_seq, AuditCheckpoint.last_hash)
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).first()
    return ChainStart(0, GENESIS) if checkpoint is None else ChainStart(*checkpoint)


def read_head(connection: Connection) -> ChainHead:
    head = connection.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash, AuditChainHead.signature).where(
            AuditChainHead.id == 1
        )
    ).one()
    return ChainHead(int(head.last_seq), str(head.last_hash), head.signature)


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


def newest_verification(connection: Connection) -> VerifiedUpTo | None:
    """The newest verification record (the one furthest along the chain), if any."""
    row = (
        connection.execute(
            select(AuditVerification.__table__)
            .order_by(AuditVerification.last_seq.desc(), AuditVerification.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else VerifiedUpTo(**row)


def _since_verified(
    connection: Connection, start: ChainStart, check: SignatureCheck | None
) -> ChainStart | BrokenLink:
    """Where an incremental verification starts: after the newest verification record,
    once it is proven (signed, and its row, unless purged, still has its hash); or at
    `start` when a purge has since gone past it, or there is none."""
    verified = newest_verification(connection)
    if verified is None or verified.last_seq <= start.seq:
        return start
    problem = None if check is None else check(verified.statement(), verified.signature)
    if problem is not None:
        return BrokenLink(
            verified.last_seq,
            None,
            f"the record of a verification up to row {verified.last_seq} {problem}: "
            "it cannot vouch for the rows before it",
        )
    stored = (
        connection.execute(
            select(AuditDecision.__table__).where(AuditDecision.seq == verified.last_seq)
        )
        .mappings()
        .first()
    )
    if stored is not None and not (
        stored["row_hash"] == verified.last_hash
        and row_hash(stored["prev_hash"], cast(Mapping[str, Any], stored)) == verified.last_hash
    ):
        return BrokenLink(
            verified.last_seq,
            stored["decision_id"],
            "its content was changed after a verification recorded its hash",
        )
    return ChainStart(verified.last_seq, verified.last_hash)


def verify_chain(
    connection: Connection,
    keys: KeyRing | None,
    saved_heads: Sequence[ChainHead] = (),
    *,
    since_verified: bool = False,
) -> Verification:
    """Prove the log from its first row, or from a signed checkpoint, to the signed head;
    name the first broken link. With `since_verified`, only the rows after the newest
    signed verification record (`record_verification`) are walked.

    With `keys`, every checkpoint and the head must carry a signature that one of them
    verifies (a head still at the genesis has none); without, only the hashes are
    checked (an unsigned, development deployment). Each of `saved_heads` (heads a
    witness kept, signed) must still be on the chain: at or before the head, and its
    row with its hash unless a checkpoint has since removed it. Rows above the head read
    first were committed after it and are left to the next verification.
    """
    _read_snapshot(connection)
    head = read_head(connection)
    check = None if keys is None else keys.problem
    signed_by = () if keys is None else tuple(keys.key_ids)
    start = chain_start(_checkpoints(connection), check)
    if isinstance(start, BrokenLink):
        return Verification(0, 0, start, signed_by)
    if since_verified:
        start = _since_verified(connection, start, check)
        if isinstance(start, BrokenLink):
            return Verification(0, 0, start, signed_by)
    for saved in saved_heads:
        problem = (
            "cannot be checked without a key"
            if check is None
            else check(saved.statement(), saved.signature)
        )
        if problem is not None:
            unproven = BrokenLink(saved.seq, None, f"the saved head at row {saved.seq} {problem}")
            return Verification(0, start.seq, unproven, signed_by)
    seen = {saved.seq: "" for saved in saved_heads if saved.seq > start.seq}
    verification = _verify(connection, head, start, seen)
    broken = (
        verification.broken
        or _unproven_head(head, check)
        or _lost_saved_head(head, start, saved_heads, seen)
    )
    return Verification(
        verification.rows_checked,
        verification.last_seq,
        broken,
        signed_by,
        start_seq=start.seq,
        last_hash=head.hash if broken is None else None,
    )


def record_verification(
    engine: Engine, verification: Verification, *, signer: AuditSigner, actor: str
) -> VerifiedUpTo | None:
    """Record, signed, that `verification` proved the chain up to its last row, so that
    the next `verify_chain(..., since_verified=True)` starts after it. Nothing for a
    broken chain, an empty one, or one already recorded as verified that far."""
    if not verification.intact or verification.last_seq == 0 or verification.last_hash is None:
        return None
    with _write_transaction(engine) as connection:
        newest = newest_verification(connection)
        if newest is not None and newest.last_seq >= verification.last_seq:
            return None
        record = VerifiedUpTo(
            id=0,  # the database's
            last_seq=verification.last_seq,
            last_hash=verification.last_hash,
            rows_checked=verification.rows_checked,
            verified_at=datetime.now(UTC),
            verified_by=actor,
        )
        values = {**vars(record), "signature": signer.sign(record.statement())}
        del values["id"]
        connection.execute(insert(AuditVerification).values(values))
    return replace(record, signature=values["signature"])


def _unproven_head(head: ChainHead, check: SignatureCheck | None) -> BrokenLink | None:
    if check is None or head.seq == 0:
        return None
    problem = check(head.statement(), head.signature)
    if problem is None:
        return None
    return BrokenLink(
        head.seq, None, f"the chain head {problem}: rows may have been rewritten, hashes and all"
    )


def _lost_saved_head(
    head: ChainHead, start: ChainStart, saved_heads: Sequence[ChainHead], seen: dict[int, str]
) -> BrokenLink | None:
    """The first saved head that the verified chain no longer passes through."""
    for saved in saved_heads:
        if saved.seq > head.seq:
            problem = (
                f"the chain's head is row {head.seq}, before a saved head at row {saved.seq}: "
                "rows at the end were removed, or the database was restored from an older copy"
            )
        elif saved.seq == start.seq and saved.hash != start.hash:
            problem = f"the checkpoint at row {saved.seq} has a hash other than a saved head's"
        elif saved.seq > start.seq and seen.get(saved.seq) != saved.hash:
            problem = (
                f"row {saved.seq} no longer has the hash a saved head recorded: "
                "it, or rows before it, were changed"
            )
        else:
            continue
        return BrokenLink(saved.seq, None, problem)
    return None


@dataclass(frozen=True)
class Purge:
    last_seq: int
    rows_removed: int


@dataclass(frozen=True)
class _PurgePlan:
    start: ChainStart
    last_seq: int  # the last row to remove
    hashes: dict[int, str]  # row_hash of the last row of each batch, as verified


def _plan_purge(engine: Engine, before: datetime, keys: KeyRing | None) -> _PurgePlan | None:
    """Verify the chain and choose the prefix to remove, in one snapshot, without locks."""
    check = None if keys is None else keys.problem
    with engine.connect() as connection:
        _read_snapshot(connection)
        head = read_head(connection)
        start = chain_start(_checkpoints(connection), check)
        if isinstance(start, BrokenLink):
            raise InvalidRequest("chain", f"is broken at row {start.seq}; purge refused")
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
    broken = verification.broken or _unproven_head(head, check)
    if broken is not None:
        raise InvalidRequest("chain", f"is broken at row {broken.seq}; purge refused")
    return _PurgePlan(start, last_seq, hashes) if last_seq > start.seq else None


def purge_before(
    engine: Engine,
    *,
    before: datetime,
    actor: str,
    signer: AuditSigner | None,
    whole_months: bool = False,
) -> Purge | None:
    """Remove the oldest rows decided before `before`, keeping the rest verifiable.

    Only a prefix of the chain can go: rows up to (not including) the first row
    decided at or after `before`. The chain is verified first, without the write
    lock; then the rows go `PURGE_BATCH` at a time, each batch in its own short
    transaction with a checkpoint naming its last row, whose hash commits to
    every row before it, and how many rows it removed, signed by `signer` (None
    only in an unsigned, development deployment); verification starts from the
    newest checkpoint once every checkpoint is proven. Each
    transaction first checks that the newest checkpoint is the one it follows and
    that its last row has the hash the verification saw, and that it deleted
    exactly the rows it meant to; otherwise it removes nothing and the purge
    stops (what earlier batches removed stays removed, behind their checkpoints).

    `engine` must be an ordinary one (not `write_lock_at_begin`), or on SQLite
    the verification would hold the write lock.

    With `whole_months`, on a partitioned PostgreSQL table (migration 0012), whole
    months go instead, each partition detached and dropped, never a long DELETE: see
    `_purge_partitions` (`accord audit purge` does so unless given `--exact-rows`).
    Elsewhere, and without it, rows go in batches as above (on a partitioned table
    too: the month partitions they leave empty are dropped by a later month purge).
    """
    if before > datetime.now(UTC):
        raise InvalidRequest("before", "is in the future: only past decisions can be purged")
    if whole_months and engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            partitioned = is_partitioned(connection)
        if partitioned:
            return _purge_partitions(engine, before=before, actor=actor, signer=signer)
    plan = _plan_purge(engine, before, None if signer is None else signer.keyring())
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
            if _newest_checkpoint(connection) != previous:
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
            checkpoint = Checkpoint(
                id=0,  # the database's
                last_seq=end,
                last_hash=verified_hash,
                rows_removed=deleted,
                purged_before=before,
                created_at=datetime.now(UTC),
                created_by=actor,
            )
            signature = None if signer is None else signer.sign(checkpoint.statement())
            values = {**vars(checkpoint), "signature": signature}
            del values["id"]
            connection.execute(insert(AuditCheckpoint).values(values))
        previous, removed = ChainStart(end, verified_hash), removed + deleted
        took = time.monotonic() - began
    return Purge(last_seq=plan.last_seq, rows_removed=removed)


def _stopped(removed: int, why: str) -> str:
    return (
        f"changed after it was verified ({why}); purge stopped after removing {removed} rows, "
        "each batch behind its checkpoint; verify and run it again"
    )


@dataclass(frozen=True)
class _PartitionPlan:
    start: ChainStart
    cut: int  # the last row to remove: every row up to it, and no other, goes
    cut_hash: str
    dropping: tuple[str, ...]  # month partitions, dropped whole
    from_default: int  # rows deleted from the DEFAULT partition (seq <= cut)


def _plan_partitions(engine: Engine, before: datetime, keys: KeyRing | None) -> _PartitionPlan:
    """Verify the chain and choose what goes, in one snapshot, without locks.

    The candidates are the month partitions that end at or before `before`, and the
    DEFAULT partition's rows decided before it. A month's rows are a run of seq only
    nearly: seq follows commit order and decided_at is stamped before the commit, so a
    row stamped just before midnight can commit after one stamped just after. The cut is
    the highest seq such that every row up to it is a candidate (one before the first
    row that is not); a partition holding a row past the cut is not dropped this time,
    which may lower the cut again, until both agree. A month left so waits for the next
    month to go with it.
    """
    check = None if keys is None else keys.problem
    with engine.connect() as connection:
        _read_snapshot(connection)
        head = read_head(connection)
        start = chain_start(_checkpoints(connection), check)
        if isinstance(start, BrokenLink):
            raise InvalidRequest("chain", f"is broken at row {start.seq}; purge refused")
        partitions = list_partitions(connection)

        def seq_of(query: str, name: str, **extra: Any) -> int | None:
            value = connection.scalar(
                text(query.format(name=name)), {"start": start.seq, "head": head.seq, **extra}
            )
            return None if value is None else int(value)

        first_after = "SELECT min(seq) FROM {name} WHERE seq > :start AND seq <= :head"
        candidates = {p.name for p in partitions if p.end is not None and p.end <= before}
        # one index probe per partition: the first row each holds after the checkpoint
        firsts = {
            p.name: seq_of(first_after, p.name)
            for p in partitions
            if p.name not in candidates and not p.is_default
        }
        if any(p.is_default for p in partitions):
            firsts[DEFAULT_PARTITION] = seq_of(
                first_after + " AND decided_at >= :before", DEFAULT_PARTITION, before=before
            )
        lasts = {name: seq_of("SELECT max(seq) FROM {name}", name) for name in candidates}
        while True:
            kept = [seq for seq in firsts.values() if seq is not None]
            cut = min(kept, default=head.seq + 1) - 1
            dropping = {name for name in candidates if (lasts[name] or 0) <= cut}
            if dropping == candidates:
                break
            for name in candidates - dropping:  # kept whole: its rows bound the cut
                firsts[name] = seq_of(first_after, name)
            candidates = dropping
        from_default = 0
        if any(p.is_default for p in partitions) and cut > start.seq:
            from_default = (
                seq_of(
                    "SELECT count(*) FROM {name} WHERE seq > :start AND seq <= :cut",
                    DEFAULT_PARTITION,
                    cut=cut,
                )
                or 0
            )
        hashes = {cut: ""} if cut > start.seq else {}
        verification = _verify(connection, head, start, hashes)
    broken = verification.broken or _unproven_head(head, check)
    if broken is not None:
        raise InvalidRequest("chain", f"is broken at row {broken.seq}; purge refused")
    return _PartitionPlan(start, cut, hashes.get(cut, ""), tuple(sorted(candidates)), from_default)


# The drop needs a moment's exclusive lock on the whole table (DETACH PARTITION), which
# queues decisions behind it while it waits: wait briefly, and try again.
DETACH_LOCK_TIMEOUT = "500ms"
DETACH_ATTEMPTS = 20


def _purge_partitions(
    engine: Engine, *, before: datetime, actor: str, signer: AuditSigner | None
) -> Purge | None:
    """PostgreSQL, partitioned: drop every month partition entirely before `before` and
    delete the DEFAULT partition's rows before it, in one transaction with one signed
    checkpoint, as `purge_before` records it (last row, its hash, rows removed).

    Rows of the month that contains `before` stay until their whole month is past it.
    The transaction first checks that the newest checkpoint is the one the plan follows
    and that the cut row still has the hash the verification saw; each partition is
    detached, then checked to hold no row past the cut, then dropped; the DEFAULT
    partition must give up exactly the rows planned. Otherwise nothing is removed.
    """
    plan = _plan_partitions(engine, before, None if signer is None else signer.keyring())
    if plan.cut <= plan.start.seq and not plan.dropping:
        return None
    for attempt in range(1, DETACH_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                _drop_partitions(connection, plan, before=before, actor=actor, signer=signer)
            break
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == DETACH_ATTEMPTS:
                raise
            time.sleep(min(0.1 * attempt, 1.0))  # a lock not granted in time: again
    if plan.cut <= plan.start.seq:
        return None  # only empty months went
    return Purge(last_seq=plan.cut, rows_removed=plan.cut - plan.start.seq)


def _drop_partitions(
    connection: Connection,
    plan: _PartitionPlan,
    *,
    before: datetime,
    actor: str,
    signer: AuditSigner | None,
) -> None:
    connection.execute(text(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'"))
    connection.execute(text("SET LOCAL accord.purge = 'on'"))  # for the DEFAULT's rows
    if _newest_checkpoint(connection) != plan.start:
        raise InvalidRequest("chain", _stopped(0, "another purge ran meanwhile"))
    if plan.cut > plan.start.seq:
        stored_hash = connection.scalar(
            select(AuditDecision.row_hash).where(AuditDecision.seq == plan.cut)
        )
        if stored_hash != plan.cut_hash:
            raise InvalidRequest("chain", _stopped(0, f"row {plan.cut} changed"))
    for name in plan.dropping:
        connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
        last = connection.scalar(text(f"SELECT max(seq) FROM {name}"))
        if last is not None and int(last) > plan.cut:
            raise InvalidRequest("chain", _stopped(0, f"{name} holds row {last}, past the cut"))
        connection.execute(text(f"DROP TABLE {name}"))
    if plan.cut <= plan.start.seq:
        return
    deleted = connection.execute(
        delete(AuditDecision).where(
            AuditDecision.seq > plan.start.seq, AuditDecision.seq <= plan.cut
        )
    ).rowcount
    if deleted != plan.from_default:
        why = f"{deleted} rows left up to row {plan.cut}, not {plan.from_default}"
        raise InvalidRequest("chain", _stopped(0, why))
    checkpoint = Checkpoint(
        id=0,  # the database's
        last_seq=plan.cut,
        last_hash=plan.cut_hash,
        rows_removed=plan.cut - plan.start.seq,
        purged_before=before,
        created_at=datetime.now(UTC),
        created_by=actor,
    )
    values = {
        **vars(checkpoint),
        "signature": None if signer is None else signer.sign(checkpoint.statement()),
    }
    del values["id"]
    connection.execute(insert(AuditCheckpoint).values(values))
