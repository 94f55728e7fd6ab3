"""The register change feed: what replicas read to keep their view of the register current.

A write appends one change per entry it touched, numbered after the register
revision it bumps first (that row lock orders the numbers as writes commit),
in the same transaction as the entries. A reader asks for the changes after
the last one it applied and gets each entry as it now stands
(`app/register/service.changes_after`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from app.store.bulk import insert_rows
from app.store.revisions import REGISTER, bump_revision, read_revision
from app.store.tables import RegisterChange

CHANGES_PER_READ = 1_000  # a read's rows are fetched in one C call, which holds the GIL
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


def feed_head(session: Session) -> int:
    """The number of the last change committed."""
    return read_revision(session, REGISTER)
