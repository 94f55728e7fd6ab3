"""The change log: every management action with its actor, time, before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.pagination import keyset_page
from app.store.revisions import Feed, bump_revision
from app.store.tables import ChangeRecord


def record_change(
    session: Session,
    *,
    moves: Feed | None,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Log a change and move the revision it `moves`: POLICY for agreements, CLIENTS
    for API clients; None where the change moves a feed of its own (register
    writes append to the register change feed, app/register/feed.py) or none (an
    approval of an agreement version).

    Both join the caller's transaction: they commit with the change or not at
    all, and every replica follows once they do (recompiling its policy, or
    reloading only its callers).
    """
    session.flush()  # the change itself first: a conflict fails here, before it is logged
    session.add(
        ChangeRecord(
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
        )
    )
    if moves is not None:
        bump_revision(session, moves)


def list_changes(
    session: Session,
    *,
    target_type: str | None,
    target_id: str | None,
    actor: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[ChangeRecord], str | None]:
    """Newest first, a page at a time."""
    query = select(ChangeRecord)
    if target_type is not None:
        query = query.where(ChangeRecord.target_type == target_type)
    if target_id is not None:
        query = query.where(ChangeRecord.target_id == target_id)
    if actor is not None:
        query = query.where(ChangeRecord.actor == actor)
    return keyset_page(session, query, ChangeRecord.seq, limit=limit, cursor=cursor)
