"""HTTP for the access map: which agency may see which classes of whose data, under which
agreement in force today, for which purposes (manage or audit). The map is
app/policy/access_map.py's; this module only reads the query and shapes the answer."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.policy.access_map import Flow, Terms, access_map
from app.policy.vocabulary import FieldClass
from app.types import VocabularyName
from app.vocabulary.router import AgencyOut
from app.web.auth import Overseer
from app.web.deps import Live, Now
from app.web.problems import Problem

router = APIRouter(prefix="/v1/access-map", tags=["agreements"])

WHOSE = (
    "Whose data, from the grant's age bounds: `anyone`, `children (under 18)` (max_age 17), "
    "`adults (18 and over)` (min_age 18), or the bounds in words"
)
EXAMPLE: dict[str, Any] = {
    "as_of": "2026-11-25",
    "policy_revision": 7,
    "agencies": [
        {"id": "police.lancashire", "name": "Lancashire Constabulary", "groups": ["police"]},
        {
            "id": "la.blackpool.childrens-services",
            "name": "Blackpool Council Children's Services",
            "groups": ["local-authority", "social-care"],
        },
    ],
    "flows": [
        {
            "holder": "police.lancashire",
            "requester": "la.blackpool.childrens-services",
            "agreement_id": "isa-blackpool-mash",
            "agreement_version": 1,
            "agreement_title": "Blackpool MASH information sharing agreement",
            "data_classes": ["personal", "special-category", "criminal-offence"],
            "purposes": ["safeguarding.children"],
            "subjects": ["children (under 18)"],
            "requires_consent": False,
            "grants": [
                {
                    "purposes": ["safeguarding.children"],
                    "fields": ["identity", "contact", "health.mental", "criminal.convictions"],
                    "data_classes": ["personal", "special-category", "criminal-offence"],
                    "requires_consent": False,
                    "min_age": None,
                    "max_age": 17,
                    "subjects": "children (under 18)",
                }
            ],
            "break_glass": {
                "purposes": ["safeguarding"],
                "fields": ["identity", "contact", "health"],
                "data_classes": ["personal", "special-category"],
            },
        }
    ],
}


class AccessGrantOut(BaseModel):
    """One grant of a flow: what it covers, for whom, on what terms."""

    purposes: list[str] = Field(description="As granted: each covers the purposes under it")
    fields: list[str] = Field(description="As granted: each covers the fields under it")
    data_classes: list[FieldClass] = Field(
        description="The classes of those fields and of the fields under them"
    )
    requires_consent: bool = Field(description="Permits only with the person's live consent")
    min_age: int | None = Field(description="The youngest subject it covers, if bounded")
    max_age: int | None = Field(description="The oldest subject it covers, if bounded")
    subjects: str = Field(description=WHOSE)


class AccessBreakGlassOut(BaseModel):
    """The agreement's break-glass block: open only in an emergency, with a justification,
    and every use is reviewed."""

    purposes: list[str]
    fields: list[str]
    data_classes: list[FieldClass]


class AccessFlowOut(BaseModel):
    """One agreement in force from one holder to one requester (groups expanded)."""

    holder: str = Field(description="The agency that holds the data")
    requester: str = Field(description="The agency that may see it")
    agreement_id: str
    agreement_version: int
    agreement_title: str
    data_classes: list[FieldClass] = Field(description="Every class its grants cover")
    purposes: list[str] = Field(description="Every purpose its grants name")
    subjects: list[str] = Field(description="Whose data, for each grant (see `grants`)")
    requires_consent: bool = Field(description="Some grant permits only with consent")
    grants: list[AccessGrantOut] = Field(
        description="The grants that match the filters (none when only break-glass does)"
    )
    break_glass: AccessBreakGlassOut | None = Field(
        description="The break-glass block, if it has one that matches the filters"
    )


class AccessMapOut(BaseModel):
    """Which agency may see which classes of whose data, by which agreement, for which
    purposes: one flow per holder, requester and agreement in force."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    as_of: date = Field(description="The day (UTC) whose agreements in force are mapped")
    policy_revision: int
    agencies: list[AgencyOut] = Field(description="The agencies the flows name, by id")
    flows: list[AccessFlowOut] = Field(description="By holder, requester and agreement id")


def _grant(terms: Terms) -> AccessGrantOut:
    return AccessGrantOut(
        purposes=list(terms.purposes),
        fields=list(terms.fields),
        data_classes=list(terms.classes),
        requires_consent=terms.requires_consent,
        min_age=terms.min_age,
        max_age=terms.max_age,
        subjects=terms.subjects,
    )


def _flow(flow: Flow) -> AccessFlowOut:
    emergency = flow.break_glass
    return AccessFlowOut(
        holder=flow.holder,
        requester=flow.requester,
        agreement_id=flow.agreement_id,
        agreement_version=flow.agreement_version,
        agreement_title=flow.agreement_title,
        data_classes=list(flow.classes),
        purposes=list(flow.purposes),
        subjects=list(flow.subjects),
        requires_consent=flow.requires_consent,
        grants=[_grant(terms) for terms in flow.grants],
        break_glass=AccessBreakGlassOut(
            purposes=list(emergency.purposes),
            fields=list(emergency.fields),
            data_classes=list(emergency.classes),
        )
        if emergency
        else None,
    )


@router.get("", responses={422: {"model": Problem, "description": "An unknown agency or purpose"}})
def get_access_map(
    live: Live,
    caller: Overseer,
    now: Now,
    agency: Annotated[
        VocabularyName | None, Query(description="Only flows this agency holds or requests")
    ] = None,
    purpose: Annotated[
        VocabularyName | None,
        Query(description="Only grants for this purpose, one under it or one above it"),
    ] = None,
    data_class: Annotated[
        FieldClass | None, Query(description="Only grants covering a field of this class")
    ] = None,
) -> AccessMapOut:
    """Which agency may see which classes of whose data, by which agreement in force
    today, for which purposes; break-glass blocks apart."""
    policy = live.current
    flows = access_map(policy, now.date(), agency=agency, purpose=purpose, data_class=data_class)
    named = sorted({name for flow in flows for name in (flow.holder, flow.requester)})
    return AccessMapOut(
        as_of=now.date(),
        policy_revision=policy.revision,
        agencies=[
            AgencyOut(id=a.id, name=a.name, groups=list(a.groups))
            for a in (policy.vocabulary.agencies[name] for name in named)
        ],
        flows=[_flow(flow) for flow in flows],
    )
