"""The register change feed: what replicas read to keep their view of the register current.

A write appends one change per entry it touched, numbered after the register
revision it bumps first (that row lock orders the numbers as writes commit),
in the same transaction as the entries. A reader asks for the changes after
the last one it applied and gets each entry as it now stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from app.store.bulk import insert_rows
from app.store.revisions import REGISTER, bump_revision, read_revision
from app.store.tables import RegisterChange, RegisterEntry

CHANGES_PER_READ = 10_000
CHANGES = cast(Table, RegisterChange.__table__)


def append_changes(session: Session, entry_ids: Sequence[str]) -> None:
    """Number and append a change for each entry written in this transaction."""
    if not entry_ids:
        return
    last = bump_revision(session, REGISTER, by=len(entry_ids))
    at = datetime.now(UTC)
    first = last - len(entry_ids) + 1
    insert_rows(
        session,
        CHANGES,
        [
            {"seq": first + offset, "entry_id": entry_id, "changed_at": at}
            for offset, entry_id in enumerate(entry_ids)
        ],
    )


@dataclass(frozen=True)
class Change:
    seq: int
    entry_id: str
    entry: RegisterEntry | None  # as it now stands; None if it no longer exists


def changes_after(session: Session, seq: int) -> list[Change]:
    """Up to CHANGES_PER_READ changes numbered after `seq`, oldest first."""
    rows = session.execute(
        select(RegisterChange, RegisterEntry)
        .outerjoin(RegisterEntry, RegisterEntry.id == RegisterChange.entry_id)
        .where(RegisterChange.seq > seq)
        .order_by(RegisterChange.seq)
        .limit(CHANGES_PER_READ)
    ).all()
    return [Change(change.seq, change.entry_id, entry) for change, entry in rows]


def feed_head(session: Session) -> int:
    """The number of the last change committed."""
    return read_revision(session, REGISTER)
