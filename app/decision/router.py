"""HTTP for decisions: parse, call the service, shape the answer. Nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.auth import CurrentCaller
from app.decision import service
from app.decision.schemas import (
    BatchDecisionOut,
    BatchDecisionRequest,
    DecisionOut,
    DecisionRequest,
    ObligationOut,
    Reason,
)
from app.deps import AppSettings, Live, RequestId, Writer
from app.problems import Problem

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Request body too large"},
    422: {"model": Problem, "description": "Invalid request, or a name not in the vocabulary"},
    503: {"model": Problem, "description": "No decision: the audit or policy is unavailable"},
}


def _out(recorded: service.RecordedDecision, answer: service.Answer) -> DecisionOut:
    decision = recorded.decision
    return DecisionOut(
        decision_id=recorded.decision_id,
        field=decision.field,
        decision="permit" if decision.permit else "deny",
        reasons=[
            Reason(
                code=decision.reason,
                message=decision.message,
                agreement_id=decision.agreement_id,
                agreement_version=decision.agreement_version,
                restriction_id=decision.restriction_id,
                consent_id=decision.consent_id,
            )
        ],
        obligations=[ObligationOut(field=o.field, mask=o.mask) for o in decision.obligations],
        break_glass=decision.break_glass,
        policy_revision=answer.policy_revision,
        decided_at=answer.decided_at,
    )


@router.post("", responses=ERRORS)
async def decide(
    body: DecisionRequest,
    caller: CurrentCaller,
    live: Live,
    writer: Writer,
    settings: AppSettings,
    request_id: RequestId,
) -> DecisionOut:
    """May the requester see one field of this person for this purpose?"""
    answer = await service.decide(
        body,
        caller=caller,
        request_id=request_id,
        live=live,
        writer=writer,
        max_fields=settings.max_batch_fields,
    )
    return _out(answer.decisions[0], answer)


@router.post("/batch", responses=ERRORS)
async def decide_batch(
    body: BatchDecisionRequest,
    caller: CurrentCaller,
    live: Live,
    writer: Writer,
    settings: AppSettings,
    request_id: RequestId,
) -> BatchDecisionOut:
    """Decide many fields of one person in one call ("*": every leaf field)."""
    answer = await service.decide(
        body,
        caller=caller,
        request_id=request_id,
        live=live,
        writer=writer,
        max_fields=settings.max_batch_fields,
    )
    decisions = [_out(recorded, answer) for recorded in answer.decisions]
    return BatchDecisionOut(
        decisions=decisions,
        permitted=[d.field for d in decisions if d.decision == "permit"],
        policy_revision=answer.policy_revision,
        decided_at=answer.decided_at,
    )
