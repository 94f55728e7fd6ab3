"""HTTP for agreements: read (manage or audit) and their lifecycle (manage), with the
parties' approvals that activation awaits when ACCORD_REQUIRE_SIGNOFF is set."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from app.agreements import approvals, service
from app.errors import Forbidden
from app.policy.document import ReceivedDocument
from app.types import LongText, PersonName, VocabularyName
from app.web.auth import Manager, Overseer
from app.web.deps import AppSettings, DbSession, Live, Now
from app.web.problems import Problem

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])
AgreementId = Annotated[VocabularyName, Path()]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]  # the database's integer
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


class ApprovalIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "signatory": "Dr A. Okafor, Caldicott Guardian",
                    "agency": "nhs.blackpool-hospitals",
                    "note": "Approved at the IG board of 2026-12-01",
                }
            ]
        },
    )

    signatory: PersonName = Field(
        description="Who signed for the agency: a person's name or staff id (required)"
    )
    agency: VocabularyName = Field(
        description="The party agency that approves; the client must be bound to it"
    )
    note: LongText | None = None


class ApprovalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int = Field(
        description="The version approved: this one, or an earlier one with the same terms"
    )
    agency: str
    signatory: str
    client: str = Field(description="The API client that sent the approval")
    note: str | None
    approved_at: datetime


class SignOffOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "isa-health-schools-draft",
                    "version": 2,
                    "status": "pending-approval",
                    "parties": [
                        "edu.blackpool-schools",
                        "nhs.blackpool-hospitals",
                        "nhs.lancashire-mental-health",
                    ],
                    "approvals": [
                        {
                            "version": 2,
                            "agency": "nhs.blackpool-hospitals",
                            "signatory": "Dr A. Okafor, Caldicott Guardian",
                            "client": "bth-ig",
                            "note": None,
                            "approved_at": "2026-12-06T10:15:00Z",
                        }
                    ],
                    "missing": ["edu.blackpool-schools", "nhs.lancashire-mental-health"],
                }
            ]
        }
    )

    agreement_id: str
    version: int
    status: str
    parties: list[str] = Field(
        description="The agencies it names as providers and recipients, groups expanded"
    )
    approvals: list[ApprovalOut] = Field(description="The approvals of its terms, oldest first")
    missing: list[str] = Field(description="The parties whose approval is still missing")


def _out(row: Any) -> AgreementVersionOut:
    return AgreementVersionOut.model_validate(row)


def _sign_off_out(state: approvals.SignOff) -> SignOffOut:
    return SignOffOut(
        agreement_id=state.row.agreement_id,
        version=state.row.version,
        status=state.row.status,
        parties=list(state.parties),
        approvals=[ApprovalOut.model_validate(approval) for approval in state.approvals],
        missing=list(state.missing),
    )


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
    body: RevisionIn,
    session: DbSession,
    live: Live,
    settings: AppSettings,
    caller: Manager,
    agreement_id: AgreementId,
) -> AgreementVersionOut:
    """Store changed terms as a new version; the old version stays readable. With
    ACCORD_REQUIRE_SIGNOFF, new terms of an active agreement are pending-approval."""
    row = service.revise_agreement(
        session,
        agreement_id=agreement_id,
        document=body.document,
        vocabulary=live.current.vocabulary,
        reason=body.reason,
        actor=caller.client_id,
        signoff=settings.require_signoff,
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
        settings: AppSettings,
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
            signoff=settings.require_signoff,
        )
        out = _out(row)
        session.commit()
        live.refresh()  # this replica decides on the new status from its next decision
        return out

    change.__name__ = f"{action}_agreement"
    change.__doc__ = f"{action.capitalize()} the agreement: a new version with the new status."
    if action == "activate":
        change.__doc__ += (
            " With ACCORD_REQUIRE_SIGNOFF it is pending-approval until every party has approved"
            " its terms (POST .../versions/{version}/approvals)."
        )
    return change


for _action in ("activate", "suspend", "revoke"):
    router.post(
        f"/{{agreement_id}}/{_action}",
        status_code=201,
        responses=WRITE_ERRORS,
        response_model=AgreementVersionOut,
    )(_status_change(_action))


@router.get("/{agreement_id}/versions/{version}/approvals", responses={404: {"model": Problem}})
def version_approvals(
    session: DbSession,
    live: Live,
    caller: Overseer,
    agreement_id: AgreementId,
    version: VersionNumber,
) -> SignOffOut:
    """The parties to a version, their approvals of its terms and whose is still missing."""
    return _sign_off_out(
        approvals.version_sign_off(session, agreement_id, version, live.current.vocabulary)
    )


@router.post(
    "/{agreement_id}/versions/{version}/approvals",
    status_code=201,
    responses={**WRITE_ERRORS, 403: {"model": Problem, "description": "Not bound to the agency"}},
)
def approve_version(
    body: ApprovalIn,
    session: DbSession,
    live: Live,
    caller: Manager,
    now: Now,
    agreement_id: AgreementId,
    version: VersionNumber,
) -> SignOffOut:
    """A party agency's approval of the current version, signed by a named person (a
    second by the same agency is 409). The last party's approval of a version pending
    approval activates it. Answers the sign-off of the current version afterwards."""
    if body.agency not in caller.agencies:
        raise Forbidden(f"client '{caller.client_id}' is not bound to {body.agency}")
    row = service.approve_version(
        session,
        agreement_id=agreement_id,
        version=version,
        agency=body.agency,
        signatory=body.signatory,
        note=body.note,
        client=caller.client_id,
        vocabulary=live.current.vocabulary,
        now=now,
    )
    out = _sign_off_out(approvals.sign_off(session, row, live.current.vocabulary))
    session.commit()
    live.refresh()  # an activation: this replica decides on it from its next decision
    return out
