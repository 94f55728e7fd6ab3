"""HTTP for the person register: a data controller's restrictions and consents."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.errors import UnsupportedMediaType
from app.register import service, transfer
from app.runtime.callers import Caller
from app.runtime.live_policy import LivePolicy
from app.runtime.register import LiveRegister
from app.store.tables import RegisterEntry
from app.types import EntryId, LongText, PersonId, UtcDatetime, VocabularyName
from app.web.auth import Manager, Overseer
from app.web.deps import DbSession, Live, Register
from app.web.problems import Problem

router = APIRouter(prefix="/v1/register", tags=["register"])
IMPORT_PATH = "/v1/register/import"  # its body limit is ACCORD_MAX_IMPORT_BYTES
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024  # a larger import body waits in a temporary file
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


class RegisterImportOut(BaseModel):
    sha256: str = Field(description="SHA-256 of the file, the change record's target_id")
    format: Literal["csv", "ndjson"]
    rows: int = Field(description="Rows in the file")
    added: int
    replaced: int
    unchanged: int = Field(description="Stored already with the same content")


_FILE_SCHEMA = {"schema": {"type": "string"}}
_IMPORT_BODY = {
    "required": True,
    "description": (
        "The file: columns id, person, kind (sealed, objection, consent), recipients, "
        "fields, purposes, until, reason. CSV lists are space-separated names, an empty "
        "cell meaning all; NDJSON lists are arrays, null or absent meaning all. `until` is "
        "a date (midnight UTC), a date-time with its offset, or empty. At most "
        "ACCORD_MAX_IMPORT_BYTES."
    ),
    "content": {media: _FILE_SCHEMA for media in transfer.MEDIA_TYPES.values()},
}


def _import_file(
    engine: Engine,
    live: LivePolicy,
    register: LiveRegister,
    source: IO[bytes],
    fmt: transfer.Format,
    actor: str,
    replace: bool,
) -> transfer.ImportResult:
    """Parse, check and store the file (in a worker thread: a million rows take a while)."""
    with Session(engine) as session:
        result = transfer.import_register(
            session,
            source,
            fmt=fmt,
            vocabulary=live.current.vocabulary,
            actor=actor,
            replace=replace,
        )
        session.commit()
    if result.added or result.replaced:
        register.refresh()  # this replica applies the change before it answers
    return result


@router.post(
    "/import",
    responses={409: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}},
    openapi_extra={"requestBody": _IMPORT_BODY},
)
async def import_register(
    request: Request,
    live: Live,
    register: Register,
    caller: Manager,
    replace: Annotated[
        bool, Query(description="Replace stored entries whose content differs")
    ] = False,
) -> RegisterImportOut:
    """Load a register file (CSV or NDJSON), all or nothing, as one change.

    Every bad row is named by line and column and nothing is stored. An entry
    stored with the same content is unchanged; with other content it is refused
    unless `replace=true`. A removed entry's id is not reused.
    """
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    formats = {media_type: fmt for fmt, media_type in transfer.MEDIA_TYPES.items()}
    if media not in formats:
        raise UnsupportedMediaType(
            f"send the file as {' or '.join(formats)}, not '{media or 'no content type'}'"
        )
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in request.stream():  # BodyLimit bounds it
            spool.write(chunk)
        spool.seek(0)
        result = await asyncio.to_thread(
            _import_file,
            request.app.state.engine,
            live,
            register,
            spool,
            formats[media],
            caller.client_id,
            replace,
        )
    return RegisterImportOut(
        sha256=result.sha256,
        format=result.format,
        rows=result.rows,
        added=result.added,
        replaced=result.replaced,
        unchanged=result.unchanged,
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Every live entry, by person then id, in the import's format",
            "content": {media: _FILE_SCHEMA for media in transfer.MEDIA_TYPES.values()},
        },
        422: {"model": Problem},
    },
)
async def export_register(
    request: Request,
    caller: Overseer,
    fmt: Annotated[transfer.Format, Query(alias="format")] = "csv",
) -> StreamingResponse:
    """The whole live register as a file that `POST /v1/register/import` reads back."""
    engine: Engine = request.app.state.engine

    def pieces() -> Iterator[bytes]:  # iterated in the thread pool, a piece at a time
        with Session(engine) as session:
            yield from transfer.export_register(session, fmt)

    return StreamingResponse(
        pieces(),
        media_type=transfer.MEDIA_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="register.{fmt}"'},
    )


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
