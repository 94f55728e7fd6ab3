"""The agreement document's shape as a pydantic model: the contract of files and the API.

`AgreementDocument` is what an agreement file (`policies/agreements/*.yaml`) and
the API's JSON body look like, as DESIGN.md's "Agreement format" describes it.
It checks the shape only: keys, types, bounds. Whether the names are in the
vocabulary, and the rules across fields (article9 for special-category fields,
article10 for criminal-offence ones, `valid_until` after `valid_from`), are
`parse_agreement`'s (app/policy/agreements.py), which validates with this model
first. Its JSON Schema is served in the OpenAPI document and printed by
`accord agreements schema` for editors.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StringConstraints,
)

from app.types import Storable, VocabularyName

# pending-approval: activated, awaiting the approval of every party (ACCORD_REQUIRE_SIGNOFF)
AgreementStatus = Literal["draft", "pending-approval", "active", "suspended", "revoked"]
STATUSES: tuple[AgreementStatus, ...] = (
    "draft",
    "pending-approval",
    "active",
    "suspended",
    "revoked",
)
SLUG_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,127}$"
MAX_NAMES = 500  # the most names one list of an agreement may hold
MAX_TEXT = 500
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _date_or_iso_text(value: Any) -> Any:
    """A YAML date or an ISO text; never a number (pydantic would read it as a timestamp)."""
    if value is None or isinstance(value, date | str):
        return value
    raise ValueError(f"must be a date (YYYY-MM-DD), got {value!r}")


Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=128)]
# Free text: a title, a legal basis, a mask; stored, and read back by every replica, so
# storable as every free text the service takes is (no NUL, no unpaired surrogate).
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=r"\S"), Storable]
Day = Annotated[date, BeforeValidator(_date_or_iso_text)]
Names = Annotated[list[VocabularyName], Field(min_length=1, max_length=MAX_NAMES)]
Age = Annotated[StrictInt, Field(ge=0, le=150, description="Whole years")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectConditions(_Part):
    """Conditions on the person; an unknown age fails any bound."""

    min_age: Age | None = None
    max_age: Age | None = None


class ObligationDocument(_Part):
    """A mask the recipient must apply to a field it is given."""

    field: VocabularyName = Field(description="A field of the vocabulary")
    mask: Text = Field(description="e.g. postcode-district")


class GrantDocument(_Part):
    """Fields that may be shared for purposes, on conditions."""

    purposes: Names = Field(description="Purposes of the vocabulary; each covers those below it")
    fields: Names = Field(description="Fields of the vocabulary; each covers those below it")
    subject: SubjectConditions | None = Field(
        default=None, description="Optional conditions on the person: min_age, max_age"
    )
    requires_consent: StrictBool = Field(
        default=False, description="Permit only with a live recorded consent of the person"
    )
    obligations: list[ObligationDocument] | None = Field(
        default=None, max_length=MAX_NAMES, description="Masks to apply, e.g. to an address"
    )


class LawfulBasis(_Part):
    """The UK GDPR / DPA 2018 basis for the sharing."""

    article6: Text = Field(description="Article 6 basis, e.g. public-task")
    article9: Text | None = Field(
        default=None, description="Article 9 condition: required for special-category fields"
    )
    article10: Text | None = Field(
        default=None, description="Article 10 basis: required for criminal-offence fields"
    )
    legislation: Annotated[list[Text], Field(max_length=MAX_NAMES)] | None = Field(
        default=None, description='e.g. ["Children Act 2004 s.11"]'
    )


class BreakGlassDocument(_Part):
    """Emergency access: permitted with a justification, flagged and queued for review."""

    purposes: Names
    fields: Names


class AgreementDocument(_Part):
    """An information sharing agreement (DESIGN.md, "Agreement format")."""

    model_config = ConfigDict(title="Accord information sharing agreement")

    id: Slug = Field(description="Stable slug: lower-case letters, digits, '.' and '-'")
    title: Text
    status: AgreementStatus = Field(
        default="draft", description="Only an active agreement within its dates permits"
    )
    valid_from: Day = Field(description="First day in force (inclusive)")
    valid_until: Day = Field(description="Day it ends (exclusive); after valid_from")
    review_by: Day | None = None
    providers: Names = Field(description="Who discloses: agencies or groups")
    recipients: Names = Field(description="Who may receive: agencies or groups")
    lawful_basis: LawfulBasis
    grants: list[GrantDocument] = Field(min_length=1, max_length=MAX_NAMES)
    break_glass: BreakGlassDocument | None = Field(
        default=None, description="Optional emergency access"
    )


def agreement_json_schema() -> dict[str, Any]:
    """The document's JSON Schema for editors: `$schema` first, then the model's schema."""
    return {"$schema": JSON_SCHEMA_DIALECT, **AgreementDocument.model_json_schema()}


def _a_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("an agreement must be a mapping (a JSON object)")
    return value


# A document received as it is, for `parse_agreement` to check and name each bad place
# (so the API's 422 names them exactly as the files' validation does), while the
# OpenAPI document describes it as an AgreementDocument.
ReceivedDocument = Annotated[
    dict[str, Any], PlainValidator(_a_mapping, json_schema_input_type=AgreementDocument)
]
