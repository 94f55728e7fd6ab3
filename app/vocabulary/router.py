"""HTTP for the vocabulary: the names every request must use (any authenticated client)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.web.auth import AnyClient
from app.web.deps import Live

router = APIRouter(prefix="/v1/vocabulary", tags=["vocabulary"])


class AgencyOut(BaseModel):
    id: str
    name: str
    groups: list[str]


class FieldOut(BaseModel):
    id: str
    field_class: str


class VocabularyOut(BaseModel):
    agencies: list[AgencyOut]
    purposes: list[str]
    fields: list[FieldOut]


@router.get("")
def get_vocabulary(live: Live, caller: AnyClient) -> VocabularyOut:
    """Agencies (with groups), purposes and fields (with their class)."""
    vocabulary = live.current.vocabulary
    return VocabularyOut(
        agencies=[
            AgencyOut(id=a.id, name=a.name, groups=list(a.groups))
            for a in vocabulary.agencies.values()
        ],
        purposes=list(vocabulary.purposes.names),
        fields=[
            FieldOut(id=name, field_class=vocabulary.field_classes[name])
            for name in vocabulary.fields.names
        ],
    )
