"""HTTP for decisions and simulations: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Decider, Overseer
from app.decision import service
from app.decision.schemas import (
    BatchDecisionOut,
    BatchDecisionRequest,
    DecisionOut,
    DecisionRequest,
    ObligationOut,
    Reason,
)
from app.deps import AppSettings, Live, PersonInfo, RequestId, Writer
from app.problems import Problem

router = APIRouter(tags=["decisions"])
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The client may not act for these agencies"},
    413: {"model": Problem, "description": "Request body too large"},
    422: {"model": Problem, "description": "Invalid request, or a name not in the vocabulary"},
    503: {"model": Problem, "description": "No decision: the audit or policy is unavailable"},
}


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: BatchDecisionRequest = Field(description="As for /v1/decisions/batch")
    agreement: dict[str, Any] | None = Field(
        default=None,
        description="A draft agreement to evaluate as if it were in force, in place of any "
        "live agreement with its id; omitted: the live policy alone",
    )


class SimulationOut(BatchDecisionOut):
    simulation: bool = Field(default=True, description="Always true: nothing was recorded")


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


def _batch(answer: service.Answer) -> dict[str, Any]:
    decisions = [_out(recorded, answer) for recorded in answer.decisions]
    return {
        "decisions": decisions,
        "permitted": [d.field for d in decisions if d.decision == "permit"],
        "policy_revision": answer.policy_revision,
        "decided_at": answer.decided_at,
    }


@router.post("/v1/decisions", responses=ERRORS)
async def decide(
    body: DecisionRequest,
    caller: Decider,
    live: Live,
    writer: Writer,
    person_info: PersonInfo,
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
        person_info=person_info,
        max_fields=settings.max_batch_fields,
    )
    return _out(answer.decisions[0], answer)


@router.post("/v1/decisions/batch", responses=ERRORS)
async def decide_batch(
    body: BatchDecisionRequest,
    caller: Decider,
    live: Live,
    writer: Writer,
    person_info: PersonInfo,
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
        person_info=person_info,
        max_fields=settings.max_batch_fields,
    )
    return BatchDecisionOut(**_batch(answer))


@router.post("/v1/simulate", responses=ERRORS)
async def simulate(
    body: SimulationRequest,
    caller: Overseer,
    live: Live,
    person_info: PersonInfo,
    settings: AppSettings,
) -> SimulationOut:
    """Evaluate a request, optionally with a draft agreement in force; record nothing."""
    answer = await service.simulate(
        body.request,
        draft=body.agreement,
        live=live,
        person_info=person_info,
        max_fields=settings.max_batch_fields,
    )
    return SimulationOut(**_batch(answer))
