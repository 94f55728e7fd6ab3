"""HTTP for the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from app.audit import queries
from app.auth import Auditor
from app.deps import DbSession
from app.problems import Problem
from app.schemas_common import PersonId, UtcDatetime, VocabularyName

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditDecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    decision_id: str
    request_id: str
    decided_at: datetime
    client: str
    requester: str
    holder: str
    person_id: str
    field: str
    purpose: str
    decision: Literal["permit", "deny"]
    reason: str
    agreement_id: str | None
    agreement_version: int | None
    restriction_id: str | None
    consent_id: str | None
    break_glass: bool
    justification: str | None
    user_ref: str | None
    case_ref: str | None
    policy_revision: int


class AuditPage(BaseModel):
    items: list[AuditDecisionOut]
    next_cursor: str | None


@router.get("/decisions", responses={422: {"model": Problem}})
def search_decisions(
    session: DbSession,
    caller: Auditor,
    person: Annotated[PersonId | None, Query()] = None,
    requester: Annotated[VocabularyName | None, Query()] = None,
    holder: Annotated[VocabularyName | None, Query()] = None,
    purpose: Annotated[VocabularyName | None, Query()] = None,
    decision: Annotated[Literal["permit", "deny"] | None, Query()] = None,
    decided_from: Annotated[UtcDatetime | None, Query(alias="from")] = None,
    decided_until: Annotated[UtcDatetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    """Decisions matching every filter given, newest first, a page at a time."""
    rows, next_cursor = queries.search_decisions(
        session,
        where=queries.AuditFilter(
            person_id=person,
            requester=requester,
            holder=holder,
            purpose=purpose,
            decision=decision,
            decided_from=decided_from,
            decided_until=decided_until,
        ),
        limit=limit,
        cursor=cursor,
    )
    return AuditPage(
        items=[AuditDecisionOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/decisions/{decision_id}", responses={404: {"model": Problem}})
def get_decision(
    session: DbSession,
    caller: Auditor,
    decision_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")],
) -> AuditDecisionOut:
    """One recorded decision."""
    return AuditDecisionOut.model_validate(queries.get_decision(session, decision_id))
