"""Reading the audit trail: filters and keyset pagination, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import AuditDecision
from app.pagination import keyset_page


@dataclass(frozen=True)
class AuditFilter:
    person_id: str | None = None
    requester: str | None = None
    holder: str | None = None
    purpose: str | None = None
    decision: str | None = None
    decided_from: datetime | None = None  # inclusive
    decided_until: datetime | None = None  # exclusive


def search_decisions(
    session: Session, *, where: AuditFilter, limit: int, cursor: str | None
) -> tuple[list[AuditDecision], str | None]:
    """One page of matching rows and the cursor of the next page (None at the end)."""
    query = select(AuditDecision)
    for column, value in (
        (AuditDecision.person_id, where.person_id),
        (AuditDecision.requester, where.requester),
        (AuditDecision.holder, where.holder),
        (AuditDecision.purpose, where.purpose),
        (AuditDecision.decision, where.decision),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.decided_from is not None:
        query = query.where(AuditDecision.decided_at >= where.decided_from)
    if where.decided_until is not None:
        query = query.where(AuditDecision.decided_at < where.decided_until)
    return keyset_page(session, query, AuditDecision.seq, limit=limit, cursor=cursor)


def get_decision(session: Session, decision_id: str) -> AuditDecision:
    row = session.scalars(
        select(AuditDecision).where(AuditDecision.decision_id == decision_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no decision '{decision_id}'")
    return row
