"""Evaluate one field request against a compiled policy: pure, deterministic.

Casbin decides (over the candidate lines the compiler indexed); this module
builds the Casbin request from the question and the person's facts, and
explains a deny by the furthest stage any agreement between the parties reached.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from app.decision.reasons import ReasonCode, RouteKind
from app.policy.agreements import Agreement, Obligation, SubjectCondition
from app.policy.compiler import CompiledPolicy, Stage, compile_policy
from app.policy.lines import CasbinRequest, PolicyLine, casbin_time
from app.policy.register import NO_ENTRIES, Consent, PersonRegister, Scope

DENY_STAGES = (
    ReasonCode.NO_AGREEMENT,
    ReasonCode.AGREEMENT_NOT_IN_FORCE,
    ReasonCode.PURPOSE_NOT_COVERED,
    ReasonCode.FIELD_NOT_COVERED,
    ReasonCode.SUBJECT_CONDITION_NOT_MET,
    ReasonCode.CONSENT_REQUIRED,
)


@dataclass(frozen=True)
class Question:
    """May `requester` see `field` of `person_id`, held by `holder`, for `purpose`?"""

    requester: str
    holder: str
    person_id: str
    field: str
    purpose: str
    emergency: bool = False


@dataclass(frozen=True)
class PersonFacts:
    person_id: str
    age: int | None
    info_unavailable: bool = False  # the person-information service failed to answer
    register: PersonRegister = NO_ENTRIES  # what the data controller recorded about them


@dataclass(frozen=True)
class Decision:
    field: str
    permit: bool
    reason: ReasonCode
    message: str
    agreement_id: str | None = None
    agreement_version: int | None = None
    restriction_id: str | None = None
    consent_id: str | None = None
    obligations: tuple[Obligation, ...] = ()
    break_glass: bool = False
    overridden_objection_id: str | None = None  # the objection a break-glass permit overrode
    routes: tuple[Route, ...] = ()  # a deny's lawful routes (lawful_routes)

    @property
    def outcome(self) -> str:
        """As answered and recorded: "permit" or "deny"."""
        return "permit" if self.permit else "deny"


@dataclass(frozen=True)
class LeafTrace:
    """What the evaluator saw for one leaf field: Casbin's candidate lines, in stage order,
    and the line that decided (None: no line matched, the model's default deny)."""

    field: str
    lines: tuple[PolicyLine, ...]
    deciding: PolicyLine | None


class Enforcer(Protocol):
    """Casbin over a question's candidate lines: its answer and the line that decided."""

    def enforce(
        self, lines: list[PolicyLine], request: CasbinRequest
    ) -> tuple[bool, PolicyLine | None]: ...


class Memo(Protocol):
    """Answers remembered for one policy revision, valid at a moment."""

    def at(self, moment: str) -> MutableMapping[tuple[object, ...], Any]: ...


def decide(
    policy: CompiledPolicy,
    questions: Iterable[Question],
    facts: PersonFacts,
    now: datetime,
    *,
    enforcer: Enforcer,
    memo: Memo | None = None,
    trace: list[list[LeafTrace]] | None = None,
) -> list[Decision]:
    """The one way Accord decides: every question of a request, on one policy, at `now`.

    Single and batch decisions, simulations and `accord policy test` all call it.
    A deny carries its lawful routes. The enforcer and the memo are a replica's
    mutable parts for this policy (app/runtime/); without a memo nothing is remembered.
    Given `trace`, one list per question is appended to it: the leaves evaluated
    (the questions asked to find lawful routes are not traced).
    """
    decisions = []
    for question in questions:
        if trace is not None:
            trace.append([])
        decision = evaluate(
            policy,
            question,
            facts,
            now,
            enforcer=enforcer,
            memo=memo,
            trace=None if trace is None else trace[-1],
        )
        if not decision.permit:
            decision = _with_routes(policy, question, decision, facts, now, enforcer, memo)
        decisions.append(decision)
    return decisions


def _memo_key(question: Question, facts: PersonFacts) -> tuple[object, ...]:
    """Every input an answer about a person with no register entry depends on."""
    return (
        question.requester,
        question.holder,
        question.field,
        question.purpose,
        question.emergency,
        facts.age,
        facts.info_unavailable,
    )


def _with_routes(
    policy: CompiledPolicy,
    question: Question,
    denied: Decision,
    facts: PersonFacts,
    now: datetime,
    enforcer: Enforcer,
    memo: Memo | None,
) -> Decision:
    """A deny with its lawful routes, remembered as a leaf's answer is (the same inputs
    decide them): finding them asks the evaluator several changed questions."""
    if memo is None or not facts.register.empty:
        routes = lawful_routes(policy, question, facts, now, enforcer=enforcer, memo=memo)
        return replace(denied, routes=routes)
    answers = memo.at(casbin_time(now))
    key = ("routes", *_memo_key(question, facts))
    decision: Decision | None = answers.get(key)
    if decision is None:
        routes = lawful_routes(policy, question, facts, now, enforcer=enforcer, memo=memo)
        decision = answers[key] = replace(denied, routes=routes)
    return decision


def evaluate(
    policy: CompiledPolicy,
    question: Question,
    facts: PersonFacts,
    now: datetime,
    *,
    enforcer: Enforcer,
    memo: Memo | None = None,
    trace: list[LeafTrace] | None = None,
) -> Decision:
    """Decide one field, or a category as all of its leaf fields (DESIGN.md); given
    `trace`, each leaf's candidate lines and deciding line are appended to it."""
    leaves = policy.vocabulary.fields.leaves_below[question.field]
    if leaves == (question.field,):
        return _evaluate_leaf(policy, question, facts, now, enforcer, memo, trace)
    return _category(
        question.field,
        [
            _evaluate_leaf(policy, replace(question, field=leaf), facts, now, enforcer, memo, trace)
            for leaf in leaves
        ],
    )


def _category(category: str, answers: list[Decision]) -> Decision:
    """One decision for a category from its leaves' answers, in vocabulary order.

    A permit only if every leaf is permitted. A deny takes the answer of the
    first leaf a person's restriction denies, else of the first leaf denied; a
    permit is break-glass when any leaf needed it, naming that leaf's agreement.
    """
    denied = [answer for answer in answers if not answer.permit]
    if denied:
        restricted = [answer for answer in denied if answer.reason == "person-restriction"]
        leaf = (restricted or denied)[0]
        return replace(leaf, field=category, message=f"{leaf.field}: {leaf.message}")
    emergency = [answer for answer in answers if answer.break_glass]
    overriding = [answer for answer in emergency if answer.overridden_objection_id]
    leaf = (overriding or emergency or answers)[0]
    obligations = dict.fromkeys(o for answer in answers for o in answer.obligations)
    return replace(
        leaf,
        field=category,
        message=f"every field under {category} is permitted; {leaf.field}: {leaf.message}",
        obligations=tuple(obligations),
    )


def _evaluate_leaf(
    policy: CompiledPolicy,
    question: Question,
    facts: PersonFacts,
    now: datetime,
    enforcer: Enforcer,
    memo: Memo | None,
    trace: list[LeafTrace] | None,
) -> Decision:
    """Decide one leaf field: deny overrides, default deny (DESIGN.md, Decision semantics).

    Answers about persons with no register entry are memoised per policy revision
    while no validity boundary passes; the key holds every input the answer
    depends on. A registered person's answer is made afresh: their few entries
    are joined to the question's lines (CompiledPolicy.candidates). A traced
    answer is made afresh too: a remembered one has no lines.
    """
    moment = casbin_time(now)
    if memo is None or trace is not None or not facts.register.empty:
        # a registered person's entries change without a new policy revision
        return _decide(policy, question, facts, now, moment, enforcer, trace)
    answers = memo.at(moment)
    key = _memo_key(question, facts)
    decision: Decision | None = answers.get(key)
    if decision is None:
        decision = answers[key] = _decide(policy, question, facts, now, moment, enforcer, None)
    return decision


def _decide(
    policy: CompiledPolicy,
    question: Question,
    facts: PersonFacts,
    now: datetime,
    moment: str,
    enforcer: Enforcer,
    trace: list[LeafTrace] | None,
) -> Decision:
    lines, entry_sources = policy.candidates(
        requester=question.requester,
        holder=question.holder,
        person=question.person_id,
        field_name=question.field,
        purpose=question.purpose,
        emergency=question.emergency,
        register=facts.register,
    )
    if not lines:  # the model's default: with no line to match, Casbin denies
        if trace is not None:
            trace.append(LeafTrace(question.field, (), None))
        return _explain_deny(policy, question, facts, now)
    allowed, line = enforcer.enforce(
        lines,
        CasbinRequest(
            requester=question.requester,
            holder=question.holder,
            person=question.person_id,
            field=question.field,
            purpose=question.purpose,
            age="" if facts.age is None else f"{min(facts.age, 999):03d}",
            emergency="yes" if question.emergency else "no",
            now=moment,
        ),
    )
    if trace is not None:
        trace.append(LeafTrace(question.field, tuple(lines), line))
    if line is None:
        return _explain_deny(policy, question, facts, now)
    source = policy.sources.get(line.source) or entry_sources[line.source]
    if not allowed:
        kind = "sealed" if source.stage == Stage.SEALED else "objection"
        return Decision(
            field=question.field,
            permit=False,
            reason=ReasonCode.PERSON_RESTRICTION,
            message=f"the person's {kind} restriction {source.restriction_id} covers this request",
            restriction_id=source.restriction_id,
        )
    break_glass = source.stage in (Stage.BREAK_GLASS, Stage.BREAK_GLASS_OVER_OBJECTION)
    agreement = f"{source.agreement_id} v{source.agreement_version}"
    return Decision(
        field=question.field,
        permit=True,
        reason=ReasonCode.BREAK_GLASS if break_glass else ReasonCode.AGREEMENT,
        message=(
            f"emergency access under the break-glass block of {agreement}, flagged for review"
            + (
                f", over the person's objection {source.overridden_objection_id}"
                if source.overridden_objection_id
                else ""
            )
            if break_glass
            else f"{agreement} grants {question.field} for {question.purpose}"
            + (f" with consent {source.consent_id}" if source.consent_id else "")
        ),
        agreement_id=source.agreement_id,
        agreement_version=source.agreement_version,
        consent_id=source.consent_id,
        overridden_objection_id=source.overridden_objection_id,
        obligations=tuple(
            obligation
            for obligation in source.obligations
            if policy.vocabulary.fields.covers(obligation.field, question.field)
        ),
        break_glass=break_glass,
    )


def _explain_deny(
    policy: CompiledPolicy, question: Question, facts: PersonFacts, now: datetime
) -> Decision:
    furthest, behind = 0, None
    for agreement in policy.agreements_by_pair.get((question.requester, question.holder), []):
        reached = _stage_reached(policy, agreement, question, facts, now)
        if reached > furthest:
            furthest, behind = reached, agreement
    reason = DENY_STAGES[furthest]
    if reason == "subject-condition-not-met" and facts.info_unavailable:
        reason = ReasonCode.PERSON_INFO_UNAVAILABLE
    return Decision(
        field=question.field,
        permit=False,
        reason=reason,
        message=_deny_message(reason, behind, question, facts, now),
        agreement_id=behind.id if behind else None,
        agreement_version=behind.version if behind else None,
    )


def _deny_message(
    reason: str,
    agreement: Agreement | None,
    question: Question,
    facts: PersonFacts,
    now: datetime,
) -> str:
    if agreement is None:
        return f"no agreement lets {question.holder} share with {question.requester}"
    name = f"{agreement.id} v{agreement.version}"
    if reason == "agreement-not-in-force":
        if agreement.status != "active":
            return f"{name} is {agreement.status}"
        return (
            f"{name} is in force from {agreement.valid_from} until {agreement.valid_until}, "
            f"not on {now.date()}"
        )
    if reason == "purpose-not-covered":
        return f"{name} grants nothing for {question.purpose}"
    if reason == "field-not-covered":
        return f"{name} does not grant {question.field} for {question.purpose}"
    if reason == "person-info-unavailable":
        return f"the person-information service did not answer, so {name}'s conditions fail"
    if reason == "subject-condition-not-met":
        age = "unknown" if facts.age is None else str(facts.age)
        return f"the person (age {age}) does not meet the subject conditions of {name}"
    return f"{name} needs the person's live consent for {question.purpose} to {question.requester}"


def _stage_reached(
    policy: CompiledPolicy,
    agreement: Agreement,
    question: Question,
    facts: PersonFacts,
    now: datetime,
) -> int:
    """How far one agreement between the parties got, as an index into DENY_STAGES."""
    if not agreement.in_force(now.date()):
        return 1
    vocabulary = policy.vocabulary
    for_purpose = [
        grant
        for grant in agreement.grants
        if any(vocabulary.purposes.covers(p, question.purpose) for p in grant.purposes)
    ]
    if not for_purpose:
        return 2
    for_field = [
        grant
        for grant in for_purpose
        if any(vocabulary.fields.covers(f, question.field) for f in grant.fields)
    ]
    if not for_field:
        return 3
    if not any(grant.subject.holds(facts.age) for grant in for_field):
        return 4
    return 5


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    agreement_id: str
    agreement_version: int
    message: str
    status: str | None = None  # agreement-not-in-force: the agreement's status
    valid_from: date | None = None  # agreement-not-in-force: when it is in force
    valid_until: date | None = None
    min_age: int | None = None  # subject-condition: the grant's bounds
    max_age: int | None = None
    age_unknown: bool = False  # subject-condition: the person's age was not known


# The id of the consent a consent route supposes the person gave.
SUPPOSED_CONSENT = "route:supposed-consent"


def lawful_routes(
    policy: CompiledPolicy,
    question: Question,
    facts: PersonFacts,
    now: datetime,
    *,
    enforcer: Enforcer,
    memo: Memo | None = None,
    dormant: bool = True,
) -> tuple[Route, ...]:
    """The ways this denied question would be permitted, each found by asking the same
    evaluator a changed question about the same parties, person and register: in an
    emergency; with the person's consent; at an age within a grant's bounds; with an
    agreement between the parties that is not in force (a draft, suspended, expired or
    not yet valid) in force (unless not `dormant`: a plan asks what is possible now). A
    change the person's restrictions still deny offers no route, so a seal never has one."""

    def ask(changed: Question, with_facts: PersonFacts) -> Decision:
        return evaluate(policy, changed, with_facts, now, enforcer=enforcer, memo=memo)

    routes: list[Route] = []
    if not question.emergency:
        answer = ask(replace(question, emergency=True), facts)
        if answer.permit:
            routes.append(
                _route(
                    RouteKind.BREAK_GLASS,
                    answer,
                    "in an emergency, with a justification, the break-glass block of {} "
                    "permits it; it is flagged for review",
                )
            )
    consent = Consent(
        SUPPOSED_CONSENT,
        question.person_id,
        Scope((question.requester,), (question.field,), (question.purpose,)),
        (casbin_time(now), casbin_time(None)),
    )
    register = replace(facts.register, consents=(*facts.register.consents, consent))
    answer = ask(question, replace(facts, register=register))
    if answer.permit and answer.consent_id == SUPPOSED_CONSENT:
        routes.append(
            _route(
                RouteKind.CONSENT,
                answer,
                f"{{}} permits it with the person's consent to {question.requester} for "
                f"{question.purpose}; none is recorded",
            )
        )
    for bounds in _age_bounds(policy, question, facts):
        age = bounds.min_age if bounds.min_age is not None else bounds.max_age
        answer = ask(question, replace(facts, age=age, info_unavailable=False))
        if answer.permit and not answer.break_glass:
            known = "unknown" if facts.age is None else str(facts.age)
            routes.append(
                replace(
                    _route(
                        RouteKind.SUBJECT_CONDITION,
                        answer,
                        f"{{}} permits it for a person {_age_range(bounds)}; "
                        f"the person's age is {known}",
                    ),
                    min_age=bounds.min_age,
                    max_age=bounds.max_age,
                    age_unknown=facts.age is None,
                )
            )
    if dormant:
        routes += _dormant_routes(policy, question, facts, now, enforcer)
    return tuple(routes)


def _route(kind: RouteKind, answer: Decision, message: str) -> Route:
    """A route to the permit `answer`; `message` names its agreement with `{}`."""
    assert answer.agreement_id is not None and answer.agreement_version is not None
    name = f"{answer.agreement_id} v{answer.agreement_version}"
    return Route(kind, answer.agreement_id, answer.agreement_version, message.format(name))


def _age_bounds(
    policy: CompiledPolicy, question: Question, facts: PersonFacts
) -> list[SubjectCondition]:
    """The age bounds of the grants between the parties that cover the question (a
    category: any of its fields) and that the person's age does not meet."""
    fields, purposes = policy.vocabulary.fields, policy.vocabulary.purposes
    asked = fields.descendants[question.field] | fields.lineage[question.field]
    found: dict[SubjectCondition, None] = {}
    for agreement in policy.agreements_by_pair.get((question.requester, question.holder), ()):
        for grant in agreement.grants:
            bounds = grant.subject
            if (
                (bounds.min_age is not None or bounds.max_age is not None)
                and not bounds.holds(facts.age)
                and not asked.isdisjoint(grant.fields)
                and any(purposes.covers(p, question.purpose) for p in grant.purposes)
            ):
                found[bounds] = None
    return list(found)


def _age_range(bounds: SubjectCondition) -> str:
    if bounds.min_age is not None and bounds.max_age is not None:
        return f"aged {bounds.min_age} to {bounds.max_age}"
    if bounds.min_age is not None:
        return f"aged {bounds.min_age} or over"
    return f"aged {bounds.max_age} or under"


def _dormant_routes(
    policy: CompiledPolicy,
    question: Question,
    facts: PersonFacts,
    now: datetime,
    enforcer: Enforcer,
) -> list[Route]:
    """A route per agreement between the parties that is not in force (and not revoked)
    and would permit the question if it were: the same evaluator, on a policy of that
    agreement alone, made active and in force today."""
    today = now.date()
    routes = []
    for agreement in policy.agreements_by_pair.get((question.requester, question.holder), ()):
        if agreement.in_force(today) or agreement.status == "revoked":
            continue
        in_force = replace(
            agreement,
            status="active",
            valid_from=min(agreement.valid_from, today),
            valid_until=max(agreement.valid_until, today + timedelta(days=1)),
        )
        alone = compile_policy(
            revision=policy.revision,
            vocabulary=policy.vocabulary,
            agreements=[in_force],
            model_text=policy.model_text,
        )
        answer = evaluate(alone, question, facts, now, enforcer=enforcer)
        if not answer.permit or answer.break_glass:
            continue
        name = f"{agreement.id} v{agreement.version}"
        why = (
            f"it is {agreement.status}"
            if agreement.status != "active"
            else f"it is in force only from {agreement.valid_from} until {agreement.valid_until}"
        )
        routes.append(
            Route(
                RouteKind.AGREEMENT_NOT_IN_FORCE,
                agreement.id,
                agreement.version,
                f"{name} would permit it, but {why}",
                status=agreement.status,
                valid_from=agreement.valid_from,
                valid_until=agreement.valid_until,
            )
        )
    return routes
