"""The decision path, in order: validate -> person facts -> evaluate -> record -> respond.

The only module that knows the order. Single and batch requests both come
through `decide`; nothing is answered until its audit rows are committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.audit.writer import AuditRecord, AuditWriter
from app.auth import Caller
from app.decision.engine import Decision, Question, evaluate
from app.decision.facts import person_facts
from app.decision.schemas import BatchDecisionRequest, DecisionRequest
from app.errors import InvalidRequest
from app.live_policy import LivePolicy
from app.policy.vocabulary import Vocabulary


@dataclass(frozen=True)
class RecordedDecision:
    decision_id: str
    decision: Decision


@dataclass(frozen=True)
class Answer:
    decisions: list[RecordedDecision]
    policy_revision: int
    decided_at: datetime


def _validate(
    vocabulary: Vocabulary, request: DecisionRequest | BatchDecisionRequest, fields: list[str]
) -> None:
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


async def decide(
    request: DecisionRequest | BatchDecisionRequest,
    *,
    caller: Caller,
    request_id: str,
    live: LivePolicy,
    writer: AuditWriter,
    max_fields: int,
) -> Answer:
    """Decide every field asked for on one policy revision, record them, then answer."""
    policy = live.current
    if isinstance(request, DecisionRequest):
        fields = [request.field]
    elif request.fields == "*":
        fields = list(policy.vocabulary.fields.leaves())
    else:
        fields = list(request.fields)
    if len(fields) > max_fields:
        raise InvalidRequest("fields", f"at most {max_fields} fields may be asked in one batch")
    _validate(policy.vocabulary, request, fields)
    caller.check_may_decide(requester=request.requester, holder=request.holder)

    now = datetime.now(UTC)
    facts = person_facts(request.subject, now.date())
    emergency = request.context.emergency
    decisions = [
        RecordedDecision(
            decision_id=str(uuid.uuid4()),
            decision=evaluate(
                policy,
                Question(
                    requester=request.requester,
                    holder=request.holder,
                    person_id=request.subject.id,
                    field=field,
                    purpose=request.purpose,
                    emergency=emergency,
                ),
                facts,
                now,
            ),
        )
        for field in fields
    ]
    await writer.write(
        [
            AuditRecord(
                decision_id=recorded.decision_id,
                request_id=request_id,
                decided_at=now,
                client=caller.client_id,
                requester=request.requester,
                holder=request.holder,
                person_id=request.subject.id,
                field=recorded.decision.field,
                purpose=request.purpose,
                decision="permit" if recorded.decision.permit else "deny",
                reason=recorded.decision.reason,
                agreement_id=recorded.decision.agreement_id,
                agreement_version=recorded.decision.agreement_version,
                restriction_id=recorded.decision.restriction_id,
                consent_id=recorded.decision.consent_id,
                break_glass=recorded.decision.break_glass,
                justification=request.context.justification if emergency else None,
                user_ref=request.context.user,
                case_ref=request.context.case_ref,
                policy_revision=policy.revision,
            )
            for recorded in decisions
        ]
    )
    return Answer(decisions=decisions, policy_revision=policy.revision, decided_at=now)
