"""Revisions: one-row counters bumped in the same transaction as the change they follow.

Three feeds: the policy revision (agreements), at which a replica compiles
its policy; the client revision (API clients), at which it only reloads its
callers; and the register revision, the number of the register change feed's
last change (app/register/feed.py), which a replica follows change by change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from app.store.tables import ClientState, PolicyState, RegisterState


@dataclass(frozen=True)
class Feed:
    """What a change moves: the revision replicas follow for that kind of record."""

    name: str
    table: type[PolicyState] | type[ClientState] | type[RegisterState]


POLICY = Feed("policy", PolicyState)
CLIENTS = Feed("clients", ClientState)
REGISTER = Feed("register", RegisterState)


@dataclass(frozen=True)
class Revisions:
    policy: int
    clients: int


def bump_revision(session: Session, feed: Feed, by: int = 1) -> int:
    """Advance `feed`'s revision; the caller's commit makes change and bump visible together."""
    table = feed.table
    revision = session.execute(
        update(table)
        .where(table.id == 1)
        .values(revision=table.revision + by, changed_at=datetime.now(UTC))
        .returning(table.revision)
    ).scalar_one()
    return int(revision)


def read_revision(connection: Connection | Session, feed: Feed = POLICY) -> int:
    table = feed.table
    return int(connection.execute(select(table.revision).where(table.id == 1)).scalar_one())


def read_revisions(connection: Connection | Session) -> Revisions:
    """Both revisions in one query (one snapshot): what a replica's poll reads."""
    policy, clients = connection.execute(
        select(
            select(PolicyState.revision).where(PolicyState.id == 1).scalar_subquery(),
            select(ClientState.revision).where(ClientState.id == 1).scalar_subquery(),
        )
    ).one()
    return Revisions(policy=int(policy), clients=int(clients))
