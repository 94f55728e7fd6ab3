"""HTTP for the evaluator: decisions, simulations, access plans and the impact of an agreement
change; parse, call the service, shape the answer."""

from __future__ import annotations

from itertools import groupby
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import Response
from opentelemetry.trace import get_current_span
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.decision import service
from app.decision.engine import LeafTrace
from app.decision.impact import Action, ClassifiedFlow, Condition, Impact
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
from app.types import VocabularyName
from app.web.auth import Decider, Overseer
from app.web.decision_route import DecisionRoute
from app.web.deps import Decisions, RequestId
from app.web.problems import Problem

router = APIRouter(tags=["decisions"])
# The two decision routes take the fast path (app/web/decision_route.py).
decision_router = APIRouter(tags=["decisions"], route_class=DecisionRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The client may not act for these agencies"},
    413: {"model": Problem, "description": "Request body too large"},
    422: {"model": Problem, "description": "Invalid request, or a name not in the vocabulary"},
    503: {"model": Problem, "description": "No decision: the audit or policy is unavailable"},
}


class SimulationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request": {
                        "requester": "la.riverton.childrens-services",
                        "holder": "police.riverton",
                        "subject": {"id": "P-1001", "attributes": {"age": 12}},
                        "fields": ["criminal.convictions"],
                        "purpose": "safeguarding.children",
                    },
                    "explain": True,
                }
            ]
        },
    )

    request: BatchDecisionRequest = Field(description="As for /v1/decisions/batch")
    agreement: ReceivedDocument | None = Field(
        default=None,
        description="A draft agreement to evaluate as if it were in force, in place of any "
        "live agreement with its id; omitted: the live policy alone",
    )
    explain: bool = Field(
        default=False,
        description="Give each decision its trace: the Casbin lines the evaluator saw for "
        "each leaf field and the one that decided (like `opa eval --explain`)",
    )


class PolicyLineOut(BaseModel):
    """One Casbin policy line, its tokens named as in model.conf's policy_definition."""

    stage: str = Field(
        description='"1" sealed > "2" break-glass over an objection > "3" objection > '
        '"4" grant > "5" break-glass: the first matching line decides'
    )
    requester: str = Field(description='An agency id, or "*"')
    holder: str
    person: str = Field(description='A person id (a line of their register entries), or "*"')
    field: str
    purpose: str
    min_age: str = Field(description='Zero-padded ("018"), or "" for no bound')
    max_age: str
    emergency: str = Field(description='"yes", or "*" for any request')
    valid_from: str = Field(description="ISO-8601 UTC, inclusive")
    valid_until: str = Field(description="ISO-8601 UTC, exclusive")
    source: str = Field(
        description="What it was compiled from: `agreement@version:stage` "
        "(e.g. isa-blackpool-mash@1:grant), or `restriction:ID` of the person's register"
    )
    eft: Literal["allow", "deny"]


# One line as a trace shows it (the example of LeafTraceOut).
EXAMPLE_LINE: dict[str, JsonValue] = {
    "stage": "4",
    "requester": "la.riverton.childrens-services",
    "holder": "police.riverton",
    "person": "*",
    "field": "criminal.convictions",
    "purpose": "safeguarding.children",
    "min_age": "",
    "max_age": "017",
    "emergency": "*",
    "valid_from": "2025-04-01T00:00:00Z",
    "valid_until": "2099-04-01T00:00:00Z",
    "source": "isa-riverton-mash@1:grant",
    "eft": "allow",
}


class LeafTraceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "field": "criminal.convictions",
                    "lines": [EXAMPLE_LINE],
                    "deciding_line": EXAMPLE_LINE,
                }
            ]
        }
    )

    field: str = Field(description="The leaf field evaluated (a category: each of its leaves)")
    lines: list[PolicyLineOut] = Field(
        description="Casbin's candidate lines for this question, in stage order"
    )
    deciding_line: PolicyLineOut | None = Field(
        description="The first line that matched, which decided; null: no line matched, "
        "the model's default deny"
    )


class SimulatedDecisionOut(DecisionOut):
    trace: list[LeafTraceOut] | None = Field(
        default=None,
        description="With `explain`: what the evaluator saw for each leaf field (not for "
        "the changed questions behind `routes`); absent otherwise",
    )


class SimulationOut(BatchDecisionOut):
    decisions: list[SimulatedDecisionOut]  # type: ignore[assignment]  # DecisionOut + trace
    simulation: bool = Field(default=True, description="Always true: nothing was recorded")


def _trace(leaves: list[LeafTrace]) -> list[dict[str, Any]]:
    """A decision's trace in the shape of LeafTraceOut."""
    return [
        {
            "field": leaf.field,
            "lines": [line._asdict() for line in leaf.lines],
            "deciding_line": leaf.deciding._asdict() if leaf.deciding else None,
        }
        for leaf in leaves
    ]


def decision_body(recorded: service.RecordedDecision, answer: service.Answer) -> dict[str, Any]:
    """One decision in the shape of DecisionOut (with its trace: SimulatedDecisionOut)."""
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
    body: dict[str, Any] = {
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
    if recorded.trace is not None:
        body["trace"] = _trace(recorded.trace)
    return body


def batch_body(answer: service.Answer, **extra: Any) -> dict[str, Any]:
    """Decisions in the shape of BatchDecisionOut."""
    decisions = [decision_body(recorded, answer) for recorded in answer.decisions]
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


@decision_router.post("/v1/decisions", response_model=DecisionOut, responses=ERRORS)
async def decide(
    body: DecisionRequest,
    caller: Decider,
    decisions: Decisions,
    request_id: RequestId,
) -> Response:
    """May the requester see one field of this person for this purpose?"""
    answer = await decisions.decide(body, caller=caller, request_id=request_id)
    if (span := get_current_span()).is_recording():  # traced: app/web/tracing.py
        ids = [d.decision_id for d in answer.decisions if d.decision_id]
        span.set_attribute("accord.decision_ids", ids)
        span.set_attribute("accord.policy_revision", answer.policy_revision)
    return _json(decision_body(answer.decisions[0], answer))


@decision_router.post("/v1/decisions/batch", response_model=BatchDecisionOut, responses=ERRORS)
async def decide_batch(
    body: BatchDecisionRequest,
    caller: Decider,
    decisions: Decisions,
    request_id: RequestId,
) -> Response:
    """Decide many fields of one person in one call ("*": every leaf field)."""
    answer = await decisions.decide(body, caller=caller, request_id=request_id)
    if (span := get_current_span()).is_recording():  # traced: app/web/tracing.py
        ids = [d.decision_id for d in answer.decisions if d.decision_id]
        span.set_attribute("accord.decision_ids", ids)
        span.set_attribute("accord.policy_revision", answer.policy_revision)
    return _json(batch_body(answer))


@router.post("/v1/simulate", response_model=SimulationOut, responses=ERRORS)
async def simulate(
    body: SimulationRequest,
    caller: Overseer,
    decisions: Decisions,
) -> Response:
    """Evaluate a request, optionally with a draft agreement in force; record nothing.
    With `explain`, each decision carries the evaluator's trace."""
    answer = await decisions.simulate(body.request, draft=body.agreement, explain=body.explain)
    return _json(batch_body(answer, simulation=True))


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
        register_entries=[
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


class ImpactRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"action": "activate"}, {"action": "suspend"}]},
    )

    action: Action = Field(
        description="activate, suspend or revoke the current version, or `version`: "
        "`document` as its next version"
    )
    document: ReceivedDocument | None = Field(
        default=None, description="The next version's document (action `version` only)"
    )


class FlowOut(BaseModel):
    field: str
    condition: Condition = Field(
        description="outright, with-consent, within-age-bounds or break-glass-only"
    )
    agreement_id: str
    agreement_version: int
    min_age: int | None = None
    max_age: int | None = None
    data_class: str = Field(description="personal, special-category or criminal-offence")
    flagged: bool = Field(description="Special-category or criminal-offence data")
    lawful_basis: str | None = Field(
        description="The article that covers the data class, as the agreement gives it "
        "(article6, article9 for special-category, article10 for criminal-offence); null: "
        "the lawful basis does not cover it"
    )


class FlowGroupOut(BaseModel):
    holder: str
    requester: str
    purpose: str
    flows: list[FlowOut]


class ImpactOut(BaseModel):
    """Every (holder, requester, field, purpose) the change grants and removes: a table an
    IG board can sign off. A tuple whose condition changes is in both lists."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "isa-riverton-housing-asb",
                    "action": "activate",
                    "policy_revision": 4,
                    "pairs_compared": [["police.riverton", "housing.riverton-homes"]],
                    "granted": [
                        {
                            "holder": "housing.riverton-homes",
                            "requester": "police.riverton",
                            "purpose": "crime-prevention",
                            "flows": [
                                {
                                    "field": "contact.address",
                                    "condition": "outright",
                                    "agreement_id": "isa-riverton-housing-asb",
                                    "agreement_version": 1,
                                    "min_age": None,
                                    "max_age": None,
                                    "data_class": "personal",
                                    "flagged": False,
                                    "lawful_basis": "article6: public-task",
                                }
                            ],
                        }
                    ],
                    "removed": [],
                }
            ]
        }
    )

    agreement_id: str
    action: Action
    policy_revision: int = Field(description="The live policy the change was assessed on")
    pairs_compared: list[list[str]] = Field(description="[requester, holder] pairs compared")
    granted: list[FlowGroupOut]
    removed: list[FlowGroupOut]


def _groups(flows: list[ClassifiedFlow]) -> list[FlowGroupOut]:
    return [
        FlowGroupOut(
            holder=holder,
            requester=requester,
            purpose=purpose,
            flows=[
                FlowOut(
                    field=item.flow.field,
                    condition=item.flow.condition,
                    agreement_id=item.flow.agreement_id,
                    agreement_version=item.flow.agreement_version,
                    min_age=item.flow.min_age,
                    max_age=item.flow.max_age,
                    data_class=item.data_class,
                    flagged=item.data_class != "personal",
                    lawful_basis=item.lawful_basis,
                )
                for item in group
            ],
        )
        for (holder, requester, purpose), group in groupby(
            flows, key=lambda item: (item.flow.holder, item.flow.requester, item.flow.purpose)
        )
    ]


@router.post(
    "/v1/agreements/{agreement_id}/impact",
    tags=["agreements"],
    responses={**ERRORS, 404: {"model": Problem}, 409: {"model": Problem}},
)
async def agreement_impact(
    body: ImpactRequest,
    caller: Overseer,
    decisions: Decisions,
    agreement_id: Annotated[VocabularyName, Path()],
) -> ImpactOut:
    """What activating, suspending or revoking an agreement, or a new version of it, would
    grant and remove, compared by the same evaluator over every field and purpose it
    reaches; special-category and criminal-offence flows flagged. Changes nothing."""
    impact, revision = await decisions.assess_change(agreement_id, body.action, body.document)
    return impact_out(impact, revision)


def impact_out(impact: Impact, revision: int) -> ImpactOut:
    """The report as the API answers it (and `accord agreements impact --json` prints it)."""
    return ImpactOut(
        agreement_id=impact.agreement_id,
        action=impact.action,
        policy_revision=revision,
        pairs_compared=[list(pair) for pair in impact.pairs],
        granted=_groups(impact.granted),
        removed=_groups(impact.removed),
    )
