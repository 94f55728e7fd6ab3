"""Impact before a change (pure): every (holder, requester, field, purpose) that a change to
one agreement grants or removes, for an information-governance board to sign off.

The policy of today and the policy with the change are each asked, by the same evaluator
that decides (through `make_plan`), about every leaf field and leaf purpose that the
agreement covers, before or after, for every pair of agencies it names: nothing else can
change (`reach`; a test compares with the whole vocabulary). Each tuple carries its
condition (outright, with consent, within age bounds, by break-glass only), its data class
and whether the agreement's lawful basis covers that class (Article 6; 9 for
special-category data; 10 for criminal-offence data). A tuple whose condition changes is
removed with its old condition and granted with its new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, Literal

from app.decision.engine import Enforcer, PersonFacts
from app.decision.plans import NO_PERSON, PlannedField, make_plan
from app.errors import Conflict, InvalidRequest, NotFound
from app.policy.agreements import Agreement, AgreementStatus, parse_agreement
from app.policy.compiler import CompiledPolicy
from app.policy.vocabulary import FieldClass

Condition = Literal["outright", "with-consent", "within-age-bounds", "break-glass-only"]
Action = Literal["activate", "suspend", "revoke", "version"]
ARTICLE_FOR_CLASS: dict[FieldClass, str] = {
    "personal": "article6",
    "special-category": "article9",
    "criminal-offence": "article10",
}
ANYONE = PersonFacts(NO_PERSON, age=None)  # no register entry, age unknown


@dataclass(frozen=True, order=True)
class Flow:
    """One (holder, requester, purpose, field) and how it is permitted. The agreement's
    version is not part of its identity: a new version that grants the same is no change."""

    holder: str
    requester: str
    purpose: str
    field: str
    condition: Condition
    agreement_id: str
    agreement_version: int = dataclass_field(compare=False)
    min_age: int | None = None
    max_age: int | None = None


@dataclass(frozen=True)
class ClassifiedFlow:
    flow: Flow
    data_class: FieldClass
    lawful_basis: str | None  # the article that covers the data class, as the agreement says


@dataclass(frozen=True)
class Impact:
    agreement_id: str
    action: Action
    pairs: list[tuple[str, str]]  # (requester, holder) compared
    granted: list[ClassifiedFlow]
    removed: list[ClassifiedFlow]


STATUS_AFTER: dict[Action, AgreementStatus] = {
    "activate": "active",
    "suspend": "suspended",
    "revoke": "revoked",
}


def proposed(
    policy: CompiledPolicy,
    agreement_id: str,
    action: Action,
    document: Mapping[str, Any] | None,
) -> Agreement:
    """The agreement as the change would leave it: a status change of the current version,
    or (`version`) `document` as its next version, keeping the current status unless the
    document names one (a new agreement: active)."""
    current = policy.agreements.get(agreement_id)
    if action == "version":
        if document is None:
            raise InvalidRequest("document", "a new version needs its document")
        if document.get("id", agreement_id) != agreement_id:
            raise InvalidRequest("document.id", f"a version of '{agreement_id}' must keep its id")
        status = document.get("status") or (current.status if current else "active")
        return parse_agreement(
            {**document, "id": agreement_id, "status": status},
            policy.vocabulary,
            version=current.version + 1 if current else 1,
            source="the new version",
        )
    if document is not None:
        raise InvalidRequest("document", f"only a new version takes a document, not {action}")
    if current is None:
        raise NotFound(f"no agreement '{agreement_id}'")
    if current.status == "revoked":
        raise Conflict(f"agreement '{agreement_id}' is revoked; it cannot change")
    return replace(current, status=STATUS_AFTER[action])


@dataclass(frozen=True)
class Reach:
    """The pairs, leaf fields and leaf purposes an agreement's versions cover: the only
    tuples a change to it can change, since the evaluator asks only the blocks that cover
    a question (app/policy/compiler.py, CompiledPolicy.candidates)."""

    pairs: list[tuple[str, str]]  # (requester, holder)
    fields: tuple[str, ...]
    purposes: tuple[str, ...]


def reach(policies: tuple[CompiledPolicy, ...], agreement_id: str) -> Reach:
    pairs: set[tuple[str, str]] = set()
    fields: set[str] = set()
    purposes: set[str] = set()
    for policy in policies:
        vocabulary = policy.vocabulary
        agreement = policy.agreements.get(agreement_id)
        if agreement is None:
            continue
        pairs |= {pair for pair, named in policy.agreements_by_pair.items() if agreement in named}
        blocks = [(g.fields, g.purposes) for g in agreement.grants]
        if agreement.break_glass is not None:
            blocks.append((agreement.break_glass.fields, agreement.break_glass.purposes))
        for granted_fields, granted_purposes in blocks:
            for name in granted_fields:
                fields |= vocabulary.fields.descendants[name]
            for name in granted_purposes:
                purposes |= vocabulary.purposes.descendants[name]
    vocabulary = policies[0].vocabulary
    return Reach(
        sorted(pairs),
        tuple(leaf for leaf in vocabulary.fields.leaves() if leaf in fields),
        tuple(leaf for leaf in vocabulary.purposes.leaves() if leaf in purposes),
    )


def _flows(
    policy: CompiledPolicy,
    scope: Reach,
    now: datetime,
    enforcer: Enforcer,
) -> set[Flow]:
    flows: set[Flow] = set()
    by_requester: dict[str, list[str]] = {}
    for requester, holder in scope.pairs:
        by_requester.setdefault(requester, []).append(holder)
    for requester, holders in by_requester.items():
        for purpose in scope.purposes:
            plan = make_plan(
                policy,
                requester=requester,
                purpose=purpose,
                holders=holders,
                facts=ANYONE,
                now=now,
                enforcer=enforcer,
                memo=None,
                fields=scope.fields,
            )
            for held in plan.holders:
                placed: tuple[tuple[Condition, list[PlannedField]], ...] = (
                    ("outright", held.permitted),
                    ("with-consent", held.with_consent),
                    ("within-age-bounds", held.within_age_bounds),
                    ("break-glass-only", held.break_glass_only),
                )
                for condition, planned in placed:
                    flows.update(
                        Flow(
                            held.holder,
                            requester,
                            purpose,
                            item.field,
                            condition,
                            item.agreement_id,
                            item.agreement_version,
                            item.min_age,
                            item.max_age,
                        )
                        for item in planned
                    )
    return flows


def assess(
    before: CompiledPolicy,
    after: CompiledPolicy,
    *,
    agreement_id: str,
    action: Action,
    now: datetime,
    enforcer: Enforcer,
    scope: Reach | None = None,
) -> Impact:
    """What changing `agreement_id` from `before` to `after` grants and removes, over the
    tuples the agreement reaches (or `scope`: the whole vocabulary gives the same)."""
    scope = scope or reach((before, after), agreement_id)
    old, new = _flows(before, scope, now, enforcer), _flows(after, scope, now, enforcer)

    def classified(flows: set[Flow], policy: CompiledPolicy) -> list[ClassifiedFlow]:
        vocabulary = policy.vocabulary
        out = []
        for flow in sorted(flows):
            data_class = vocabulary.field_classes[flow.field]
            article = ARTICLE_FOR_CLASS[data_class]
            basis = policy.agreements[flow.agreement_id].lawful_basis.get(article)
            out.append(ClassifiedFlow(flow, data_class, f"{article}: {basis}" if basis else None))
        return out

    return Impact(
        agreement_id=agreement_id,
        action=action,
        pairs=scope.pairs,
        granted=classified(new - old, after),
        removed=classified(old - new, before),
    )
