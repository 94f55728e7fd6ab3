"""HTTP for the person register: a data controller's restrictions and consents."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.register import service
from app.runtime.callers import Caller
from app.store.tables import RegisterEntry
from app.types import EntryId, LongText, PersonId, UtcDatetime, VocabularyName
from app.web.auth import Manager, Overseer
from app.web.deps import DbSession, Live, Register
from app.web.problems import Problem

router = APIRouter(prefix="/v1/register", tags=["register"])
Names = list[VocabularyName]


class _EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EntryId | None = Field(default=None, description="Given id, or one is made")
    person: PersonId
    recipients: Names | None = Field(
        default=None, min_length=1, max_length=200, description="Agencies or groups; omitted: all"
    )
    fields: Names | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Fields (and all below); omitted: all",
    )
    purposes: Names | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Purposes (and all below); omitted: all",
    )
    reason: LongText = Field(description="Why it was recorded")
    until: UtcDatetime | date | None = Field(
        default=None, description="When it lapses (a date means midnight UTC); omitted: never"
    )

    def until_moment(self) -> datetime | None:
        if self.until is None or isinstance(self.until, datetime):
            return self.until
        return datetime.combine(self.until, time(), tzinfo=UTC)


class RestrictionIn(_EntryIn):
    kind: Literal["sealed", "objection"]


class ConsentIn(_EntryIn):
    pass


class RegisterEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    person_id: str
    kind: Literal["sealed", "objection", "consent"]
    recipients: list[str] | None
    fields: list[str] | None
    purposes: list[str] | None
    reason: str
    until: datetime | None
    recorded_by: str
    recorded_at: datetime
    removed_by: str | None
    removed_at: datetime | None


class RegisterListing(BaseModel):
    person_id: str
    entries: list[RegisterEntryOut]


ERRORS: dict[int | str, dict[str, Any]] = {409: {"model": Problem}, 422: {"model": Problem}}


def _add(
    session: DbSession,
    live: Live,
    register: Register,
    caller: Caller,
    body: _EntryIn,
    kind: str,
) -> RegisterEntryOut:
    row = service.add_entry(
        session,
        entry=service.NewEntry(
            id=body.id,
            person_id=body.person,
            kind=kind,
            recipients=body.recipients,
            fields=body.fields,
            purposes=body.purposes,
            reason=body.reason,
            until=body.until_moment(),
        ),
        vocabulary=live.current.vocabulary,
        actor=caller.client_id,
    )
    out = RegisterEntryOut.model_validate(row)
    session.commit()
    register.refresh()  # this replica applies the change before it answers
    return out


@router.post("/restrictions", status_code=201, responses=ERRORS)
def add_restriction(
    body: RestrictionIn, session: DbSession, live: Live, register: Register, caller: Manager
) -> RegisterEntryOut:
    """Record a sealed field or an objection to sharing for one person."""
    return _add(session, live, register, caller, body, body.kind)


@router.post("/consents", status_code=201, responses=ERRORS)
def add_consent(
    body: ConsentIn, session: DbSession, live: Live, register: Register, caller: Manager
) -> RegisterEntryOut:
    """Record a person's consent to sharing."""
    return _add(session, live, register, caller, body, "consent")


@router.get("", responses={422: {"model": Problem}})
def list_register(
    session: DbSession,
    caller: Overseer,
    person: Annotated[PersonId, Query()],
    include_removed: bool = False,
) -> RegisterListing:
    """Everything recorded about one person."""
    rows: list[RegisterEntry] = service.list_entries(
        session, person_id=person, include_removed=include_removed
    )
    return RegisterListing(
        person_id=person, entries=[RegisterEntryOut.model_validate(row) for row in rows]
    )


@router.delete(
    "/{entry_id}", status_code=204, responses={404: {"model": Problem}, 409: {"model": Problem}}
)
def remove_entry(
    session: DbSession,
    register: Register,
    caller: Manager,
    entry_id: Annotated[EntryId, Path()],
) -> Response:
    """Remove an entry from force; it stays listed with who removed it and when."""
    service.remove_entry(session, entry_id=entry_id, actor=caller.client_id)
    session.commit()
    register.refresh()
    return Response(status_code=204)
