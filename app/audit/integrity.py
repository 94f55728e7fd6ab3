"""Proving the audit trail: verify the hash chain, and purge old rows behind a checkpoint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, delete, func, insert, select, text

from app.audit.chain import GENESIS, ChainStart, Verification, verify_rows
from app.errors import InvalidRequest
from app.models import AuditChainHead, AuditCheckpoint, AuditDecision

READ_BATCH = 5000


def _chain_start(connection: Connection) -> ChainStart:
    checkpoint = connection.execute(
        select(AuditCheckpoint.last_seq, AuditCheckpoint.last_hash)
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).first()
    return ChainStart(0, GENESIS) if checkpoint is None else ChainStart(*checkpoint)


def _rows_from(connection: Connection, after_seq: int) -> Iterator[Mapping[str, Any]]:
    """Every row after `after_seq`, in seq order, a bounded batch at a time."""
    while True:
        batch = (
            connection.execute(
                select(AuditDecision.__table__)
                .where(AuditDecision.seq > after_seq)
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


def verify_chain(connection: Connection) -> Verification:
    """Check every row from the last checkpoint to the head; name the first broken link."""
    head = connection.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash).where(AuditChainHead.id == 1)
    ).one()
    start = _chain_start(connection)
    return verify_rows(
        _rows_from(connection, start.seq),
        start=start,
        head_seq=int(head.last_seq),
        head_hash=str(head.last_hash),
    )


@dataclass(frozen=True)
class Purge:
    last_seq: int
    rows_removed: int


def purge_before(connection: Connection, *, before: datetime, actor: str) -> Purge | None:
    """Remove the oldest rows decided before `before`, keeping the rest verifiable.

    Only a prefix of the chain can go: rows up to (not including) the first row
    decided at or after `before`. The last removed row's hash, which commits to
    every row before it, is kept as a checkpoint that verification starts from.
    The caller's transaction commits the deletion and the checkpoint together.
    """
    if before > datetime.now(UTC):
        raise InvalidRequest("before", "is in the future: only past decisions can be purged")
    verification = verify_chain(connection)
    if verification.broken is not None:
        raise InvalidRequest("chain", f"is broken at row {verification.broken.seq}; purge refused")
    start = _chain_start(connection)
    removable = select(AuditDecision.seq, AuditDecision.row_hash).where(
        AuditDecision.seq > start.seq
    )
    first_kept = connection.execute(
        select(func.min(AuditDecision.seq)).where(
            AuditDecision.seq > start.seq, AuditDecision.decided_at >= before
        )
    ).scalar_one()
    if first_kept is not None:
        removable = removable.where(AuditDecision.seq < first_kept)
    last_removed = connection.execute(removable.order_by(AuditDecision.seq.desc()).limit(1)).first()
    if last_removed is None:
        return None
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL accord.purge = 'on'"))  # the trigger's permission
    removed = connection.execute(
        delete(AuditDecision).where(AuditDecision.seq <= last_removed.seq)
    ).rowcount
    connection.execute(
        insert(AuditCheckpoint).values(
            purged_before=before,
            last_seq=last_removed.seq,
            last_hash=last_removed.row_hash,
            rows_removed=removed,
            created_at=datetime.now(UTC),
            created_by=actor,
        )
    )
    return Purge(last_seq=int(last_removed.seq), rows_removed=int(removed))
