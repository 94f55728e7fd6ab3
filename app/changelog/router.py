"""HTTP for the change log (scope `audit`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from app.changelog import service
from app.types import EntryId
from app.web.auth import Auditor
from app.web.deps import DbSession
from app.web.problems import Problem

router = APIRouter(prefix="/v1/changes", tags=["audit"])


class ChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class ChangePage(BaseModel):
    items: list[ChangeOut]
    next_cursor: str | None


@router.get("", responses={422: {"model": Problem}})
def list_changes(
    session: DbSession,
    caller: Auditor,
    target_type: Annotated[Literal["agreement", "register", "client"] | None, Query()] = None,
    target_id: Annotated[EntryId | None, Query()] = None,
    actor: Annotated[EntryId | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ChangePage:
    """Management actions, newest first: who changed what, when, before and after."""
    rows, next_cursor = service.list_changes(
        session,
        target_type=target_type,
        target_id=target_id,
        actor=actor,
        limit=limit,
        cursor=cursor,
    )
    return ChangePage(items=[ChangeOut.model_validate(r) for r in rows], next_cursor=next_cursor)
