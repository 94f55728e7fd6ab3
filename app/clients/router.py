"""HTTP for API clients (scope `manage`). A key is shown once, in the create response."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from app.clients import service
from app.types import EntryId, ShortText, VocabularyName
from app.web.auth import Manager
from app.web.deps import DbSession, Live
from app.web.problems import Problem

router = APIRouter(prefix="/v1/clients", tags=["clients"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EntryId
    name: ShortText
    scopes: list[ShortText] = Field(min_length=1, max_length=4)
    agencies: list[VocabularyName] = Field(min_length=1, max_length=200)


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    scopes: list[str]
    agencies: list[str]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None


class NewClientOut(ClientOut):
    key: str = Field(description="The API key: shown this once, stored only as a digest")


@router.get("")
def list_clients(session: DbSession, caller: Manager) -> list[ClientOut]:
    """Every client, revoked ones included; keys are never shown again."""
    return [ClientOut.model_validate(row) for row in service.list_clients(session)]


@router.post("", status_code=201, responses=ERRORS)
def create_client(body: ClientIn, session: DbSession, live: Live, caller: Manager) -> NewClientOut:
    """Create a client and its key."""
    row, key = service.create_client(
        session,
        client_id=body.id,
        name=body.name,
        scopes=body.scopes,
        agencies=body.agencies,
        vocabulary=live.current.vocabulary,
        actor=caller.client_id,
    )
    out = NewClientOut.model_validate({**ClientOut.model_validate(row).model_dump(), "key": key})
    session.commit()
    live.refresh()
    return out


@router.post("/{client_id}/revoke", responses=ERRORS)
def revoke_client(
    session: DbSession, live: Live, caller: Manager, client_id: Annotated[EntryId, Path()]
) -> ClientOut:
    """Revoke a client: its key stops working on every replica at its next poll.

    It moves the client revision, not the policy's: no replica recompiles its policy.
    """
    row = service.revoke_client(session, client_id=client_id, actor=caller.client_id)
    out = ClientOut.model_validate(row)
    session.commit()
    live.refresh()
    return out
