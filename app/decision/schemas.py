"""The decision API's request and response bodies (DESIGN.md, API sketch)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from app.decision.reasons import ReasonCode, RouteKind
from app.types import MAX_BATCH_FIELDS, LongText, PersonId, ShortText, VocabularyName


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def plausible_birth_date(value: date | None) -> date | None:
    if value is not None and not date(1870, 1, 1) <= value <= date.today():
        raise ValueError("must be a past date within the last 150 years")
    return value


class SubjectAttributes(Strict):
    age: StrictInt | None = Field(default=None, ge=0, le=150, description="Age in whole years")
    birth_date: date | None = Field(default=None, description="Used for age when age is absent")

    @model_validator(mode="after")
    def _one_source_of_age(self) -> Self:
        if self.age is not None and self.birth_date is not None:
            raise ValueError("give age or birth_date, not both")
        return self

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date | None) -> date | None:
        return plausible_birth_date(value)


class Subject(Strict):
    id: PersonId
    attributes: SubjectAttributes = Field(default_factory=SubjectAttributes)


class RequestContext(Strict):
    user: ShortText | None = Field(default=None, description="The person at the partner system")
    case_ref: ShortText | None = None
    emergency: StrictBool = False
    justification: LongText | None = None

    @model_validator(mode="after")
    def _emergency_needs_justification(self) -> Self:
        if self.emergency and not (self.justification and self.justification.strip()):
            raise ValueError("an emergency request needs a non-empty justification")
        return self


class DecisionRequest(Strict):
    requester: VocabularyName = Field(description="The agency asking to see the data")
    holder: VocabularyName = Field(description="The agency holding the data")
    subject: Subject
    field: VocabularyName
    purpose: VocabularyName
    context: RequestContext = Field(default_factory=RequestContext)


class BatchDecisionRequest(Strict):
    requester: VocabularyName
    holder: VocabularyName
    subject: Subject
    fields: (
        Annotated[list[VocabularyName], Field(min_length=1, max_length=MAX_BATCH_FIELDS)]
        | Literal["*"]
    ) = Field(description='Fields to decide, or "*" for every leaf field of the vocabulary')
    purpose: VocabularyName
    context: RequestContext = Field(default_factory=RequestContext)


class Reason(BaseModel):
    code: ReasonCode = Field(
        description="Stable reason code, e.g. agreement, field-not-covered; a break-glass "
        "permit over an objection has a second reason, objection-overridden"
    )
    message: str
    agreement_id: str | None = None
    agreement_version: int | None = None
    restriction_id: str | None = None
    consent_id: str | None = None


class ObligationOut(BaseModel):
    field: str
    mask: str


class RouteOut(BaseModel):
    """A lawful way the same question between the same parties could be permitted."""

    kind: RouteKind = Field(
        description="consent: a grant needs the person's consent and none is live; "
        "break-glass: an emergency with a justification would be permitted; "
        "agreement-not-in-force: an agreement that would cover it is a draft, suspended, "
        "expired or not yet valid; subject-condition: a grant's age bounds"
    )
    agreement_id: str
    agreement_version: int
    message: str
    status: str | None = Field(default=None, description="agreement-not-in-force: its status")
    valid_from: date | None = Field(default=None, description="agreement-not-in-force")
    valid_until: date | None = Field(default=None, description="agreement-not-in-force")
    min_age: int | None = Field(default=None, description="subject-condition: the bounds")
    max_age: int | None = None
    age_unknown: bool = Field(
        default=False, description="subject-condition: the person's age was not known"
    )


class DecisionOut(BaseModel):
    decision_id: str | None = Field(description="The audit row's id (null in a simulation)")
    field: str
    decision: Literal["permit", "deny"]
    reasons: list[Reason]
    obligations: list[ObligationOut]
    routes: list[RouteOut] = Field(
        description="On a deny, the lawful routes to a permit (none that a restriction on "
        "the person forbids); empty on a permit. Not a disclosure: ask again the changed "
        "question before sharing",
        json_schema_extra={
            "examples": [
                [
                    {
                        "kind": "consent",
                        "agreement_id": "isa-blackpool-early-help",
                        "agreement_version": 1,
                        "message": "isa-blackpool-early-help v1 permits it with the person's "
                        "consent to la.blackpool.early-help for early-help; none is recorded",
                    }
                ]
            ]
        },
    )
    break_glass: bool
    policy_revision: int
    decided_at: datetime


class BatchDecisionOut(BaseModel):
    decisions: list[DecisionOut]
    permitted: list[str] = Field(description="The fields permitted, in request order")
    policy_revision: int
    decided_at: datetime


class PlanSubject(Strict):
    id: PersonId | None = Field(
        default=None, description="A person: their register entries take part and are listed"
    )
    attributes: SubjectAttributes = Field(default_factory=SubjectAttributes)


class PlanRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "requester": "la.riverton.childrens-services",
                    "purpose": "safeguarding.children",
                    "holder": "police.riverton",
                    "subject": {"id": "P-1001", "attributes": {"age": 12}},
                }
            ]
        },
    )

    requester: VocabularyName = Field(description="The agency that would ask")
    purpose: VocabularyName
    holder: VocabularyName | None = Field(
        default=None, description="One holder; omitted: every holder an agreement names"
    )
    subject: PlanSubject = Field(
        default_factory=PlanSubject,
        description="Optionally a person's attributes (age) and id; omitted: anyone, age unknown",
    )


class PlannedFieldOut(BaseModel):
    field: str
    agreement_id: str
    agreement_version: int
    obligations: list[ObligationOut] = Field(default_factory=list)
    min_age: int | None = Field(default=None, description="within_age_bounds: the bounds")
    max_age: int | None = None


class HolderPlanOut(BaseModel):
    holder: str
    permitted: list[PlannedFieldOut] = Field(description="Permitted now, outright")
    with_consent: list[PlannedFieldOut] = Field(
        description="Permitted only with the person's consent, which is not recorded"
    )
    within_age_bounds: list[PlannedFieldOut] = Field(
        description="Permitted only for a person within a grant's age bounds"
    )
    break_glass_only: list[PlannedFieldOut] = Field(
        description="Reachable only in an emergency, with a justification (reviewed)"
    )


class RegisterEntryOut(BaseModel):
    id: str
    kind: Literal["sealed", "objection", "consent"]
    recipients: list[str] | None
    fields: list[str] | None
    purposes: list[str] | None
    until: str = Field(description="When it lapses (UTC), 9999-... for never")


class PlanOut(BaseModel):
    """Which sections a partner screen may ask for: not a decision, and nothing is recorded."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "requester": "la.riverton.childrens-services",
                    "purpose": "safeguarding.children",
                    "person_id": "P-1001",
                    "holders": [
                        {
                            "holder": "nhs.riverton-hospital",
                            "permitted": [
                                {
                                    "field": "health.mental",
                                    "agreement_id": "isa-riverton-mash",
                                    "agreement_version": 1,
                                    "obligations": [],
                                    "min_age": None,
                                    "max_age": None,
                                }
                            ],
                            "with_consent": [],
                            "within_age_bounds": [],
                            "break_glass_only": [
                                {
                                    "field": "health.physical",
                                    "agreement_id": "isa-riverton-mash",
                                    "agreement_version": 1,
                                    "obligations": [],
                                    "min_age": None,
                                    "max_age": None,
                                }
                            ],
                        }
                    ],
                    "register_entries": [
                        {
                            "id": "r-sealed-address",
                            "kind": "sealed",
                            "recipients": None,
                            "fields": ["contact.address"],
                            "purposes": None,
                            "until": "9999-12-31",
                        }
                    ],
                    "policy_revision": 5,
                }
            ]
        }
    )

    requester: str
    purpose: str
    person_id: str | None
    holders: list[HolderPlanOut]
    register_entries: list[RegisterEntryOut] = Field(
        description="The person's register entries that bear on this requester and purpose"
    )
    policy_revision: int
