"""The policy revision: bumped in the same transaction as every policy change."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from app.store.tables import PolicyState


def bump_revision(session: Session) -> int:
    """Advance the revision; the caller's commit makes the change and the bump visible together."""
    revision = session.execute(
        update(PolicyState)
        .where(PolicyState.id == 1)
        .values(revision=PolicyState.revision + 1, changed_at=datetime.now(UTC))
        .returning(PolicyState.revision)
    ).scalar_one()
    return int(revision)


def read_revision(connection: Connection | Session) -> int:
    return int(
        connection.execute(select(PolicyState.revision).where(PolicyState.id == 1)).scalar_one()
    )
