"""HTTP for agreements: read (manage or audit) and their lifecycle (manage)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict

from app.agreements import service
from app.policy.document import ReceivedDocument
from app.types import LongText, VocabularyName
from app.web.auth import Manager, Overseer
from app.web.deps import DbSession, Live
from app.web.problems import Problem

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])
AgreementId = Annotated[VocabularyName, Path()]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem},
    409: {"model": Problem, "description": "Exists already, or not in a state to change"},
    422: {"model": Problem, "description": "The document is invalid; each bad place is named"},
}
DOCUMENT_EXAMPLE = {
    "id": "isa-example",
    "title": "Example agreement",
    "valid_from": "2026-01-01",
    "valid_until": "2028-01-01",
    "providers": ["police"],
    "recipients": ["la.riverton.childrens-services"],
    "lawful_basis": {"article6": "public-task"},
    "grants": [{"purposes": ["safeguarding.children"], "fields": ["identity.name"]}],
}
Document = Annotated[
    ReceivedDocument,
    Body(description="An agreement in the format of DESIGN.md", examples=[DOCUMENT_EXAMPLE]),
]


class AgreementVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agreement_id: str
    version: int
    status: str
    change: str
    reason: str | None
    document: dict[str, Any]
    created_at: datetime
    created_by: str


class RevisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: ReceivedDocument
    reason: LongText | None = None


class StatusChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: LongText


def _out(row: Any) -> AgreementVersionOut:
    return AgreementVersionOut.model_validate(row)


@router.get("")
def list_agreements(session: DbSession, caller: Overseer) -> list[AgreementVersionOut]:
    """The current version of every agreement."""
    return [_out(row) for row in service.current_versions(session)]


@router.get("/{agreement_id}", responses={404: {"model": Problem}})
def get_agreement(
    session: DbSession, caller: Overseer, agreement_id: AgreementId
) -> AgreementVersionOut:
    """The current version of one agreement."""
    return _out(service.current_version(session, agreement_id))


@router.get("/{agreement_id}/versions", responses={404: {"model": Problem}})
def agreement_history(
    session: DbSession, caller: Overseer, agreement_id: AgreementId
) -> list[AgreementVersionOut]:
    """Every version, oldest first, with who made it, when and why."""
    return [_out(row) for row in service.version_history(session, agreement_id)]


@router.post("", status_code=201, responses=WRITE_ERRORS)
def create_agreement(
    document: Document, session: DbSession, live: Live, caller: Manager
) -> AgreementVersionOut:
    """Create an agreement as a draft (version 1)."""
    row = service.create_agreement(
        session, document=document, vocabulary=live.current.vocabulary, actor=caller.client_id
    )
    out = _out(row)
    session.commit()
    live.refresh()
    return out


@router.post("/{agreement_id}/versions", status_code=201, responses=WRITE_ERRORS)
def revise_agreement(
    body: RevisionIn, session: DbSession, live: Live, caller: Manager, agreement_id: AgreementId
) -> AgreementVersionOut:
    """Store changed terms as a new version; the old version stays readable."""
    row = service.revise_agreement(
        session,
        agreement_id=agreement_id,
        document=body.document,
        vocabulary=live.current.vocabulary,
        reason=body.reason,
        actor=caller.client_id,
    )
    out = _out(row)
    session.commit()
    live.refresh()
    return out


def _status_change(action: str) -> Any:
    def change(
        body: StatusChangeIn,
        session: DbSession,
        live: Live,
        caller: Manager,
        agreement_id: AgreementId,
    ) -> AgreementVersionOut:
        row = service.change_status(
            session,
            agreement_id=agreement_id,
            action=action,
            reason=body.reason,
            vocabulary=live.current.vocabulary,
            actor=caller.client_id,
        )
        out = _out(row)
        session.commit()
        live.refresh()  # this replica decides on the new status from its next decision
        return out

    change.__name__ = f"{action}_agreement"
    change.__doc__ = f"{action.capitalize()} the agreement: a new version with the new status."
    return change


for _action in ("activate", "suspend", "revoke"):
    router.post(
        f"/{{agreement_id}}/{_action}",
        status_code=201,
        responses=WRITE_ERRORS,
        response_model=AgreementVersionOut,
    )(_status_change(_action))
