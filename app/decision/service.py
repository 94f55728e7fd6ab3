"""The decision path, in order: validate -> person facts -> evaluate -> record -> respond.

The only module that knows the order. Single, batch and simulated requests
all come through `_evaluate_request`; a real decision is answered only after
its audit rows are committed, a simulation writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.audit.record import AuditRow
from app.audit.writer import AuditWriter
from app.decision.engine import Decision, LeafTrace, decide
from app.decision.facts import PersonInfoService, person_facts
from app.decision.impact import Action, Impact, assess, proposed
from app.decision.plans import NO_PERSON, Plan, holders_for, make_plan
from app.decision.schemas import PlanRequest, Subject
from app.decision.validate import AnyDecisionRequest, validated_questions
from app.policy.compiler import CompiledPolicy, with_agreement
from app.policy.register import NO_ENTRIES
from app.runtime.callers import Caller
from app.runtime.clock import Clock
from app.runtime.ids import new_id
from app.runtime.live_policy import LivePolicy
from app.runtime.metrics import END_TO_END_SECONDS, EVALUATE_SECONDS, decisions_answered
from app.runtime.register import LiveRegister
from app.runtime.snapshot import PolicySnapshot


@dataclass(frozen=True)
class RecordedDecision:
    decision_id: str | None  # None for a simulation, which records nothing
    decision: Decision
    trace: list[LeafTrace] | None = None  # an explained simulation: the leaves evaluated


@dataclass(frozen=True)
class Answer:
    decisions: list[RecordedDecision]
    policy_revision: int
    decided_at: datetime


async def _evaluate_request(
    request: AnyDecisionRequest,
    *,
    snapshot: PolicySnapshot,
    register: LiveRegister,
    person_info: PersonInfoService | None,
    max_fields: int,
    now: datetime,
    decider: Caller | None,
    explain: bool = False,
) -> Answer:
    """Validate -> person facts -> decide; `decider` is checked for its agencies
    (None: a simulation, which gets no decision ids); `explain`: each decision's trace."""
    policy = snapshot.policy
    questions = validated_questions(request, policy.vocabulary, max_fields)
    if decider is not None:
        decider.check_may_decide(requester=request.requester, holder=request.holder)
    facts = await person_facts(
        request.subject,
        now.date(),
        register=register.entries(request.subject.id),
        needs_age=(request.requester, request.holder) in policy.age_conditioned_pairs,
        person_info=person_info,
    )
    evaluating = time.perf_counter()
    traces: list[list[LeafTrace]] | None = [] if explain else None
    decided = decide(
        policy,
        questions,
        facts,
        now,
        enforcer=snapshot.enforcer,
        memo=snapshot.memo,
        trace=traces,
    )
    decisions = [
        RecordedDecision(
            decision_id=new_id() if decider is not None else None,
            decision=decision,
            trace=None if traces is None else traces[index],
        )
        for index, decision in enumerate(decided)
    ]
    EVALUATE_SECONDS.observe(time.perf_counter() - evaluating)
    return Answer(decisions=decisions, policy_revision=policy.revision, decided_at=now)


def _audit_rows(
    answer: Answer, request: AnyDecisionRequest, *, caller: Caller, request_id: str
) -> list[AuditRow]:
    """The audit rows of a request's decisions: AuditRecord's fields, as the writer takes
    them. Built as plain dicts from the validated request and the evaluator's answer (a
    pydantic model per decision cost more than deciding it); tests/test_audit_record.py
    checks they have exactly AuditRecord's fields and types."""
    context = request.context
    request_columns = {
        "request_id": request_id,
        "decided_at": answer.decided_at,
        "client": caller.client_id,
        "requester": request.requester,
        "holder": request.holder,
        "person_id": request.subject.id,
        "purpose": request.purpose,
        "justification": context.justification if context.emergency else None,
        "user_ref": context.user,
        "case_ref": context.case_ref,
        "policy_revision": answer.policy_revision,
    }
    rows: list[AuditRow] = []
    for recorded in answer.decisions:
        decision = recorded.decision
        rows.append(
            {
                **request_columns,
                "decision_id": recorded.decision_id,
                "field": decision.field,
                "decision": decision.outcome,
                "reason": decision.reason.value,
                "agreement_id": decision.agreement_id,
                "agreement_version": decision.agreement_version,
                # a deny's restriction, or the objection a break-glass permit overrode
                "restriction_id": decision.restriction_id or decision.overridden_objection_id,
                "consent_id": decision.consent_id,
                "break_glass": decision.break_glass,
                "obligations": [{"field": o.field, "mask": o.mask} for o in decision.obligations],
                "routes_offered": [route.kind.value for route in decision.routes],
            }
        )
    return rows


@dataclass(frozen=True)
class DecisionService:
    """The decision path's parts, assembled once at startup (routes get it as one dependency)."""

    live: LivePolicy
    register: LiveRegister
    writer: AuditWriter
    person_info: PersonInfoService | None
    max_fields: int
    clock: Clock
    # Compiling a draft for a simulation, and evaluating a plan's every field, is CPU
    # work: it runs in a thread, at most this many at once, so decisions on the event
    # loop never wait behind it.
    offloaded: asyncio.Semaphore

    async def decide(
        self, request: AnyDecisionRequest, *, caller: Caller, request_id: str
    ) -> Answer:
        """Decide every field asked for on one policy revision, record them, then answer."""
        started = time.perf_counter()
        answer = await _evaluate_request(
            request,
            snapshot=self.live.snapshot,
            register=self.register,
            person_info=self.person_info,
            max_fields=self.max_fields,
            now=self.clock.now(),
            decider=caller,
        )
        await self.writer.write(_audit_rows(answer, request, caller=caller, request_id=request_id))
        outcomes = Counter((r.decision.outcome, r.decision.reason) for r in answer.decisions)
        for (outcome, reason), count in outcomes.items():
            decisions_answered(outcome, reason, request.purpose).inc(count)
        END_TO_END_SECONDS.observe(time.perf_counter() - started)
        return answer

    async def simulate(
        self, request: AnyDecisionRequest, *, draft: dict[str, Any] | None, explain: bool = False
    ) -> Answer:
        """Evaluate against the live policy, or with `draft` in force in place of its namesake;
        with `explain`, each decision carries the evaluator's trace.

        Nothing is recorded: a simulation is not a disclosure.
        """
        snapshot = self.live.snapshot
        if draft is not None:
            async with self.offloaded:
                snapshot = await asyncio.to_thread(_with_draft, snapshot.policy, draft)
        return await _evaluate_request(
            request,
            snapshot=snapshot,
            register=self.register,
            person_info=self.person_info,
            max_fields=self.max_fields,
            now=self.clock.now(),
            decider=None,
            explain=explain,
        )

    async def plan(self, request: PlanRequest, *, caller: Caller) -> tuple[Plan, int]:
        """The plan for a requester and purpose (and optionally a holder and a person), with
        the policy revision it was made on. Records nothing."""
        snapshot = self.live.snapshot
        policy = snapshot.policy
        policy.vocabulary.refuse_unknown(
            (
                ("requester", request.requester, "agency"),
                ("holder", request.holder, "agency"),
                ("purpose", request.purpose, "purpose"),
            )
        )
        caller.check_may_decide(
            requester=request.requester, holder=request.holder or request.requester
        )
        holders = [request.holder] if request.holder else holders_for(policy, request.requester)
        now = self.clock.now()
        person = request.subject
        subject = Subject.model_construct(id=person.id or NO_PERSON, attributes=person.attributes)
        facts = await person_facts(
            subject,
            now.date(),
            register=self.register.entries(person.id) if person.id else NO_ENTRIES,
            needs_age=person.id is not None
            and any(
                (request.requester, holder) in policy.age_conditioned_pairs for holder in holders
            ),
            person_info=self.person_info,
        )
        async with self.offloaded:
            made = await asyncio.to_thread(
                make_plan,
                policy,
                requester=request.requester,
                purpose=request.purpose,
                holders=holders,
                facts=facts,
                now=now,
                enforcer=snapshot.enforcer,
                memo=snapshot.memo,
            )
        return made, policy.revision

    async def assess_change(
        self, agreement_id: str, action: Action, document: dict[str, Any] | None
    ) -> tuple[Impact, int]:
        """What a change to one agreement would grant and remove, on the live policy, with
        the revision it was assessed on. Changes nothing."""
        snapshot = self.live.snapshot
        changed = proposed(snapshot.policy, agreement_id, action, document)
        now = self.clock.now()

        def assessed() -> Impact:
            return assess(
                snapshot.policy,
                with_agreement(snapshot.policy, changed),
                agreement_id=agreement_id,
                action=action,
                now=now,
                enforcer=snapshot.enforcer,
            )

        async with self.offloaded:
            return await asyncio.to_thread(assessed), snapshot.policy.revision


def _with_draft(policy: CompiledPolicy, draft: dict[str, Any]) -> PolicySnapshot:
    """`policy` recompiled with `draft` active as the next version of its namesake."""
    agreement = proposed(policy, str(draft.get("id", "")), "version", {**draft, "status": "active"})
    return PolicySnapshot.of(with_agreement(policy, agreement), memoise=False)
