"""Access plans (pure): which fields a requester may have from each holder for a purpose, and
on what terms, like Cerbos's PlanResources.

A plan is the same evaluator's answers, field by field: a field permitted now is
`permitted`; a denied one is placed by its lawful routes (`consent`, an age within a
grant's bounds, or `break-glass`), found as a deny's routes are. For a person, their
register entries take part (a sealed field is in no list) and are listed. A plan is
not a decision and records nothing: a partner still asks before it discloses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from app.decision.engine import (
    Enforcer,
    Memo,
    PersonFacts,
    Question,
    Route,
    evaluate,
    lawful_routes,
)
from app.decision.reasons import RouteKind
from app.policy.agreements import Obligation
from app.policy.compiler import CompiledPolicy
from app.policy.register import Consent, Restriction

# A plan's person when none is named: no register entries, so a placeholder id.
NO_PERSON = ""


@dataclass(frozen=True)
class PlannedField:
    field: str
    agreement_id: str
    agreement_version: int
    obligations: tuple[Obligation, ...] = ()
    min_age: int | None = None  # within_age_bounds: the grant's bounds
    max_age: int | None = None


@dataclass(frozen=True)
class HolderPlan:
    holder: str
    permitted: list[PlannedField] = field(default_factory=list)
    with_consent: list[PlannedField] = field(default_factory=list)
    within_age_bounds: list[PlannedField] = field(default_factory=list)
    break_glass_only: list[PlannedField] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    requester: str
    purpose: str
    holders: list[HolderPlan]
    register: tuple[Restriction | Consent, ...]  # the person's entries that bear on it


def holders_for(policy: CompiledPolicy, requester: str) -> list[str]:
    """Every agency that some agreement names as a holder for `requester`, sorted."""
    return sorted({holder for asker, holder in policy.agreements_by_pair if asker == requester})


def make_plan(
    policy: CompiledPolicy,
    *,
    requester: str,
    purpose: str,
    holders: Iterable[str],
    facts: PersonFacts,
    now: datetime,
    enforcer: Enforcer,
    memo: Memo | None,
    fields: Iterable[str] | None = None,
) -> Plan:
    """Every leaf field of the vocabulary (or of `fields`), for each holder, as the
    evaluator answers it."""
    leaves = policy.vocabulary.fields.leaves() if fields is None else tuple(fields)
    plans = []
    for holder in holders:
        holder_plan = HolderPlan(holder)
        for leaf in leaves:
            question = Question(requester, holder, facts.person_id, leaf, purpose)
            decision = evaluate(policy, question, facts, now, enforcer=enforcer, memo=memo)
            if decision.permit:
                assert decision.agreement_id is not None and decision.agreement_version
                holder_plan.permitted.append(
                    PlannedField(
                        leaf,
                        decision.agreement_id,
                        decision.agreement_version,
                        obligations=decision.obligations,
                    )
                )
                continue
            routes = lawful_routes(
                policy, question, facts, now, enforcer=enforcer, memo=memo, dormant=False
            )
            _place(holder_plan, leaf, routes)
        plans.append(holder_plan)
    return Plan(requester, purpose, plans, _bearing(policy, requester, purpose, facts))


def _place(holder_plan: HolderPlan, leaf: str, routes: tuple[Route, ...]) -> None:
    """A denied field in the first list one of its routes opens: consent, then an age
    within bounds, then break-glass (an agreement not in force permits nothing now)."""
    by_kind = {route.kind: route for route in routes}
    for kind, planned in (
        (RouteKind.CONSENT, holder_plan.with_consent),
        (RouteKind.SUBJECT_CONDITION, holder_plan.within_age_bounds),
        (RouteKind.BREAK_GLASS, holder_plan.break_glass_only),
    ):
        route = by_kind.get(kind)
        if route is not None:
            planned.append(
                PlannedField(
                    leaf,
                    route.agreement_id,
                    route.agreement_version,
                    min_age=route.min_age,
                    max_age=route.max_age,
                )
            )
            return


def _bearing(
    policy: CompiledPolicy, requester: str, purpose: str, facts: PersonFacts
) -> tuple[Restriction | Consent, ...]:
    """The person's register entries that cover `requester` and `purpose` for some field."""
    vocabulary = policy.vocabulary
    entries: tuple[Restriction | Consent, ...] = (
        *facts.register.restrictions,
        *facts.register.consents,
    )
    return tuple(
        entry
        for entry in entries
        if any(
            entry.scope.covers(vocabulary, requester, leaf, purpose)
            for leaf in vocabulary.fields.leaves()
        )
    )
