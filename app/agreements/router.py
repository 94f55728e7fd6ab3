"""HTTP for reading agreements (current versions)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from app.agreements import service
from app.auth import CurrentCaller
from app.deps import DbSession
from app.problems import Problem
from app.schemas_common import VocabularyName

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])


class AgreementVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agreement_id: str
    version: int
    status: str
    document: dict[str, Any]
    created_at: datetime
    created_by: str


@router.get("")
def list_agreements(session: DbSession, caller: CurrentCaller) -> list[AgreementVersionOut]:
    """The current version of every agreement."""
    return [AgreementVersionOut.model_validate(row) for row in service.current_versions(session)]


@router.get("/{agreement_id}", responses={404: {"model": Problem}})
def get_agreement(
    session: DbSession, caller: CurrentCaller, agreement_id: Annotated[VocabularyName, Path()]
) -> AgreementVersionOut:
    """The current version of one agreement."""
    return AgreementVersionOut.model_validate(service.current_version(session, agreement_id))
