"""HTTP for decisions and simulations: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.decision import service
from app.decision.plans import Plan, PlannedField
from app.decision.reasons import ReasonCode
from app.decision.schemas import (
    BatchDecisionOut,
    BatchDecisionRequest,
    DecisionOut,
    DecisionRequest,
    HolderPlanOut,
    PlannedFieldOut,
    PlanOut,
    PlanRequest,
    RegisterEntryOut,
)
from app.policy.document import ReceivedDocument
from app.policy.register import Consent
from app.web.auth import Decider, Overseer
from app.web.deps import Decisions, RequestId
from app.web.problems import Problem

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
    agreement: ReceivedDocument | None = Field(
        default=None,
        description="A draft agreement to evaluate as if it were in force, in place of any "
        "live agreement with its id; omitted: the live policy alone",
    )


class SimulationOut(BatchDecisionOut):
    simulation: bool = Field(default=True, description="Always true: nothing was recorded")


def _decision(recorded: service.RecordedDecision, answer: service.Answer) -> dict[str, Any]:
    """One decision in the shape of DecisionOut."""
    decision = recorded.decision
    reasons = [
        {
            "code": decision.reason,
            "message": decision.message,
            "agreement_id": decision.agreement_id,
            "agreement_version": decision.agreement_version,
            "restriction_id": decision.restriction_id,
            "consent_id": decision.consent_id,
        }
    ]
    if decision.overridden_objection_id:
        reasons.append(
            {
                "code": ReasonCode.OBJECTION_OVERRIDDEN,
                "message": f"the person's objection {decision.overridden_objection_id} "
                "is overridden by this emergency access",
                "agreement_id": None,
                "agreement_version": None,
                "restriction_id": decision.overridden_objection_id,
                "consent_id": None,
            }
        )
    return {
        "decision_id": recorded.decision_id,
        "field": decision.field,
        "decision": decision.outcome,
        "reasons": reasons,
        "obligations": [{"field": o.field, "mask": o.mask} for o in decision.obligations],
        "routes": [vars(route) for route in decision.routes],
        "break_glass": decision.break_glass,
        "policy_revision": answer.policy_revision,
        "decided_at": answer.decided_at,
    }


def _batch(answer: service.Answer, **extra: Any) -> dict[str, Any]:
    """Decisions in the shape of BatchDecisionOut."""
    decisions = [_decision(recorded, answer) for recorded in answer.decisions]
    return {
        "decisions": decisions,
        "permitted": [d["field"] for d in decisions if d["decision"] == "permit"],
        "policy_revision": answer.policy_revision,
        "decided_at": answer.decided_at,
        **extra,
    }


def _json(payload: dict[str, Any]) -> Response:
    """The answer serialised once with orjson; a batch of 100 fields would otherwise
    build and validate 100 pydantic models (the response model stays the documented shape)."""
    return Response(orjson.dumps(payload, option=orjson.OPT_UTC_Z), media_type="application/json")


@router.post("/v1/decisions", response_model=DecisionOut, responses=ERRORS)
async def decide(
    body: DecisionRequest,
    caller: Decider,
    decisions: Decisions,
    request_id: RequestId,
) -> Response:
    """May the requester see one field of this person for this purpose?"""
    answer = await decisions.decide(body, caller=caller, request_id=request_id)
    return _json(_decision(answer.decisions[0], answer))


@router.post("/v1/decisions/batch", response_model=BatchDecisionOut, responses=ERRORS)
async def decide_batch(
    body: BatchDecisionRequest,
    caller: Decider,
    decisions: Decisions,
    request_id: RequestId,
) -> Response:
    """Decide many fields of one person in one call ("*": every leaf field)."""
    answer = await decisions.decide(body, caller=caller, request_id=request_id)
    return _json(_batch(answer))


@router.post("/v1/simulate", response_model=SimulationOut, responses=ERRORS)
async def simulate(
    body: SimulationRequest,
    caller: Overseer,
    decisions: Decisions,
) -> Response:
    """Evaluate a request, optionally with a draft agreement in force; record nothing."""
    answer = await decisions.simulate(body.request, draft=body.agreement)
    return _json(_batch(answer, simulation=True))


def _planned(fields: list[PlannedField]) -> list[PlannedFieldOut]:
    return [
        PlannedFieldOut(
            field=planned.field,
            agreement_id=planned.agreement_id,
            agreement_version=planned.agreement_version,
            obligations=[{"field": o.field, "mask": o.mask} for o in planned.obligations],
            min_age=planned.min_age,
            max_age=planned.max_age,
        )
        for planned in fields
    ]


def _plan_out(made: Plan, person_id: str | None, revision: int) -> PlanOut:
    return PlanOut(
        requester=made.requester,
        purpose=made.purpose,
        person_id=person_id,
        holders=[
            HolderPlanOut(
                holder=holder.holder,
                permitted=_planned(holder.permitted),
                with_consent=_planned(holder.with_consent),
                within_age_bounds=_planned(holder.within_age_bounds),
                break_glass_only=_planned(holder.break_glass_only),
            )
            for holder in made.holders
        ],
        register=[
            RegisterEntryOut(
                id=entry.id,
                kind="consent" if isinstance(entry, Consent) else entry.kind,
                recipients=None if entry.scope.recipients is None else [*entry.scope.recipients],
                fields=None if entry.scope.fields is None else [*entry.scope.fields],
                purposes=None if entry.scope.purposes is None else [*entry.scope.purposes],
                until=entry.window[1],
            )
            for entry in made.register
        ],
        policy_revision=revision,
    )


@router.post("/v1/plans", responses=ERRORS)
async def access_plan(body: PlanRequest, caller: Decider, decisions: Decisions) -> PlanOut:
    """Which fields the requester may have from each holder for this purpose: outright, with
    consent, within age bounds, or by break-glass only (like Cerbos's PlanResources). A
    partner screen uses it to know which sections to ask for; it records nothing, and the
    decision API is still what a partner calls before it discloses."""
    made, revision = await decisions.plan(body, caller=caller)
    return _plan_out(made, body.subject.id, revision)
