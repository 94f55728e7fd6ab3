"""A decision request checked against the vocabulary (pure), and turned into questions."""

from __future__ import annotations

from app.decision.engine import Question
from app.decision.schemas import BatchDecisionRequest, DecisionRequest
from app.errors import InvalidRequest
from app.policy.vocabulary import Vocabulary

AnyDecisionRequest = DecisionRequest | BatchDecisionRequest


def validated_questions(
    request: AnyDecisionRequest, vocabulary: Vocabulary, max_fields: int
) -> list[Question]:
    """The request's questions, one per field asked for, every name checked."""
    fields = requested_fields(request, vocabulary, max_fields)
    validate_names(vocabulary, request, fields)
    return questions(request, fields)


def requested_fields(
    request: AnyDecisionRequest, vocabulary: Vocabulary, max_fields: int
) -> list[str]:
    """The fields asked for: one, a list, or every leaf field for "*"."""
    if isinstance(request, DecisionRequest):
        return [request.field]
    if request.fields == "*":
        return list(vocabulary.fields.leaves())
    if len(request.fields) > max_fields:
        raise InvalidRequest("fields", f"at most {max_fields} fields may be asked in one batch")
    return list(request.fields)


def validate_names(vocabulary: Vocabulary, request: AnyDecisionRequest, fields: list[str]) -> None:
    for location, agency in (("requester", request.requester), ("holder", request.holder)):
        if agency not in vocabulary.agencies:
            raise InvalidRequest(location, f"unknown agency '{agency}'")
    if request.purpose not in vocabulary.purposes:
        raise InvalidRequest("purpose", f"unknown purpose '{request.purpose}'")
    field_location = "field" if isinstance(request, DecisionRequest) else "fields"
    for field in fields:
        if field not in vocabulary.fields:
            raise InvalidRequest(field_location, f"unknown field '{field}'")
    if len(set(fields)) != len(fields):
        raise InvalidRequest(field_location, "a field is listed more than once")


def questions(request: AnyDecisionRequest, fields: list[str]) -> list[Question]:
    """One question per field asked for."""
    return [
        Question(
            requester=request.requester,
            holder=request.holder,
            person_id=request.subject.id,
            field=field,
            purpose=request.purpose,
            emergency=request.context.emergency,
        )
        for field in fields
    ]
