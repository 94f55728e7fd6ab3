"""The register change feed: what replicas read to keep their view of the register current.

A write appends one change per entry it touched, numbered after the register
revision it bumps first (that row lock orders the numbers as writes commit),
in the same transaction as the entries. A reader asks for the changes after
the last one it applied and gets each entry as it now stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.store.revisions import REGISTER, bump_revision, read_revision
from app.store.tables import RegisterChange, RegisterEntry

CHANGES_PER_READ = 10_000


def append_changes(session: Session, entries: Sequence[tuple[str, str]]) -> None:
    """Number and append a change for each (entry id, person id) written in this transaction."""
    if not entries:
        return
    last = bump_revision(session, REGISTER, by=len(entries))
    at = datetime.now(UTC)
    session.execute(
        insert(RegisterChange),
        [
            {
                "seq": last - len(entries) + offset,
                "entry_id": entry,
                "person_id": person,
                "changed_at": at,
            }
            for offset, (entry, person) in enumerate(entries, start=1)
        ],
    )


@dataclass(frozen=True)
class Change:
    seq: int
    entry_id: str
    person_id: str  # the person the change was filed under
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
    return [Change(change.seq, change.entry_id, change.person_id, entry) for change, entry in rows]


def feed_head(session: Session) -> int:
    """The number of the last change committed."""
    return read_revision(session, REGISTER)


def live_entries(session: Session) -> Iterable[RegisterEntry]:
    """Every entry not removed, streamed."""
    return session.scalars(
        select(RegisterEntry)
        .where(RegisterEntry.removed_at.is_(None))
        .execution_options(yield_per=10_000)
    )
