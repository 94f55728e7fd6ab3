"""Reading the audit trail: filters, keyset pagination, streaming, subject-access reports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, String, func, literal, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.store.pagination import keyset_page
from app.store.tables import AuditDecision

EXPORT_BATCH = 1000
FOLLOW_BATCH = 500  # rows per read when following the trail as it grows


@dataclass(frozen=True)
class AuditFilter:
    """Each given filter must hold; `fields`/`purposes` already include descendants."""

    person_id: str | None = None
    requester: str | None = None
    holder: str | None = None
    client: str | None = None
    user_ref: str | None = None
    case_ref: str | None = None
    fields: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    decision: str | None = None
    reason: str | None = None
    agreement_id: str | None = None
    break_glass: bool | None = None
    decided_from: datetime | None = None  # inclusive
    decided_until: datetime | None = None  # exclusive

    def apply(self, query: Select[Any]) -> Select[Any]:
        for column, value in (
            (AuditDecision.person_id, self.person_id),
            (AuditDecision.requester, self.requester),
            (AuditDecision.holder, self.holder),
            (AuditDecision.client, self.client),
            (AuditDecision.user_ref, self.user_ref),
            (AuditDecision.case_ref, self.case_ref),
            (AuditDecision.decision, self.decision),
            (AuditDecision.reason, self.reason),
            (AuditDecision.agreement_id, self.agreement_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.break_glass is not None:  # IS: the partial index's own predicate
            query = query.where(AuditDecision.break_glass.is_(self.break_glass))
        if self.fields is not None:
            query = query.where(AuditDecision.field.in_(sorted(self.fields)))
        if self.purposes is not None:
            query = query.where(AuditDecision.purpose.in_(sorted(self.purposes)))
        if self.decided_from is not None:
            query = query.where(AuditDecision.decided_at >= self.decided_from)
        if self.decided_until is not None:
            query = query.where(AuditDecision.decided_at < self.decided_until)
        return query


EVERY_ROW = AuditFilter()


def search_decisions(
    session: Session, *, where: AuditFilter, limit: int, cursor: str | None
) -> tuple[list[AuditDecision], str | None]:
    """One page of matching rows, newest first, and the next page's cursor (None at the end).

    seq is given in commit order, so a page boundary never skips a row that
    commits while an auditor pages.
    """
    query = where.apply(select(AuditDecision))
    return keyset_page(session, query, AuditDecision.seq, limit=limit, cursor=cursor)


def decisions_after(
    engine: Engine, *, after: int, limit: int = FOLLOW_BATCH, where: AuditFilter = EVERY_ROW
) -> list[AuditDecision]:
    """The first `limit` matching rows after seq `after`, in seq order, detached from their
    session: one bounded read, in its own short transaction.

    The writer gives seq in commit order under the chain head's lock, so once a row is
    visible every row before it is too: reading on from the last seq seen never skips one.
    The audit stream and `accord audit tail` follow the trail with it, exports page with it.
    """
    with Session(engine) as session:
        batch = list(
            session.scalars(
                where.apply(select(AuditDecision))
                .where(AuditDecision.seq > after)
                .order_by(AuditDecision.seq)
                .limit(limit)
            )
        )
        session.expunge_all()
    return batch


def stream_decisions(engine: Engine, *, where: AuditFilter) -> Iterator[AuditDecision]:
    """Every matching row, oldest first, read a bounded batch at a time (constant memory)."""
    after = 0
    while True:
        batch = decisions_after(engine, after=after, limit=EXPORT_BATCH, where=where)
        yield from batch
        if len(batch) < EXPORT_BATCH:
            return
        after = batch[-1].seq


def get_decision(session: Session, decision_id: str) -> AuditDecision:
    row = session.scalars(
        select(AuditDecision).where(AuditDecision.decision_id == decision_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no decision '{decision_id}'")
    return row


@dataclass
class DisclosureGroup:
    """Everything one agency asked about a person for one purpose."""

    requester: str
    purpose: str
    decisions: list[AuditDecision]

    @property
    def permitted(self) -> int:
        return sum(1 for row in self.decisions if row.decision == "permit")


def subject_access(engine: Engine, person_id: str) -> list[DisclosureGroup]:
    """Every decision about one person, grouped by requesting agency and purpose."""
    groups: dict[tuple[str, str], DisclosureGroup] = {}
    for row in stream_decisions(engine, where=AuditFilter(person_id=person_id)):
        key = (row.requester, row.purpose)
        groups.setdefault(key, DisclosureGroup(row.requester, row.purpose, [])).decisions.append(
            row
        )
    return [groups[key] for key in sorted(groups)]


def daily_counts(
    session: Session, *, where: AuditFilter, since: datetime
) -> list[tuple[str, str, int]]:
    """(day, decision, count) of matching decisions since `since`, oldest day first."""
    column = AuditDecision.decided_at
    if session.get_bind().dialect.name == "sqlite":
        day = func.date(column)  # SQLite keeps UTC text
    else:
        day = func.to_char(func.timezone(literal("UTC", String()), column), "YYYY-MM-DD")
    query = (
        where.apply(select(day.label("day"), AuditDecision.decision, func.count()))
        .where(column >= since)
        .group_by("day", AuditDecision.decision)
        .order_by("day")
    )
    return [(str(d), str(decision), int(n)) for d, decision, n in session.execute(query)]


def count_decisions(session: Session, *, where: AuditFilter) -> int:
    """How many rows match."""
    return int(session.scalar(where.apply(select(func.count()).select_from(AuditDecision))) or 0)
