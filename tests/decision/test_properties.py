"""Properties of the compiler and engine over generated agreements, registers and requests.

- A permit always rests on an agreement in force that names the holder and the
  requester; every leaf of the field asked (a category is all of its fields) is
  covered with the purpose by a grant or, in an emergency, a break-glass block.
- Adding a restriction never turns a deny into a permit.
- Removing an agreement never turns a deny into a permit.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.decision.engine import PersonFacts, Question
from app.policy.agreements import Agreement, parse_agreement
from app.policy.compiler import compile_policy
from app.policy.register import NO_ENTRIES, PersonRegister, Restriction, Scope, window_of
from app.policy.vocabulary import Vocabulary
from tests.scenario import MODEL_TEXT, evaluate_on, scenario_vocabulary

pytestmark = pytest.mark.slow  # Hypothesis: hundreds of compiled partnerships a property

VOCABULARY = scenario_vocabulary()
AGENCY_NAMES = sorted([*VOCABULARY.agencies, *VOCABULARY.groups])
AGENCIES = sorted(VOCABULARY.agencies)
FIELDS = list(VOCABULARY.fields.names)
PURPOSES = list(VOCABULARY.purposes.names)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
RECORDED = datetime(2026, 1, 1, tzinfo=UTC)
BASIS = {"article6": "public-task", "article9": "x", "article10": "y"}


@st.composite
def agreements(draw: st.DrawFn, index: int) -> Agreement:
    grants = [
        {
            "purposes": draw(st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=2)),
            "fields": draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)),
            **draw(
                st.sampled_from([{}, {"subject": {"max_age": 17}}, {"subject": {"min_age": 18}}])
            ),
        }
        for _ in range(draw(st.integers(1, 2)))
    ]
    document: dict[str, Any] = {
        "id": f"isa-{index}",
        "title": "generated",
        "status": draw(st.sampled_from(["active", "active", "draft", "suspended"])),
        "valid_from": draw(st.sampled_from(["2025-01-01", "2027-01-01"])),
        "valid_until": "2099-01-01",
        "providers": draw(st.lists(st.sampled_from(AGENCY_NAMES), min_size=1, max_size=2)),
        "recipients": draw(st.lists(st.sampled_from(AGENCY_NAMES), min_size=1, max_size=2)),
        "lawful_basis": BASIS,
        "grants": grants,
    }
    if draw(st.booleans()):
        document["break_glass"] = {"purposes": grants[0]["purposes"], "fields": grants[0]["fields"]}
    return parse_agreement(document, VOCABULARY)


@st.composite
def partnerships(draw: st.DrawFn) -> list[Agreement]:
    return [draw(agreements(index)) for index in range(draw(st.integers(1, 5)))]


@st.composite
def questions(draw: st.DrawFn) -> tuple[Question, PersonFacts]:
    question = Question(
        requester=draw(st.sampled_from(AGENCIES)),
        holder=draw(st.sampled_from(AGENCIES)),
        person_id="P-1",
        field=draw(st.sampled_from(FIELDS)),
        purpose=draw(st.sampled_from(PURPOSES)),
        emergency=draw(st.booleans()),
    )
    return question, PersonFacts("P-1", draw(st.sampled_from([None, 8, 17, 18, 40])))


@st.composite
def restrictions(draw: st.DrawFn) -> Restriction:
    def maybe(names: list[str]) -> tuple[str, ...] | None:
        picked = draw(
            st.one_of(st.none(), st.lists(st.sampled_from(names), min_size=1, max_size=2))
        )
        return None if picked is None else tuple(picked)

    kinds: list[Literal["sealed", "objection"]] = ["sealed", "objection"]
    kind = draw(st.sampled_from(kinds))
    fields = (
        maybe(FIELDS)
        if kind == "objection"
        else tuple(draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)))
    )
    scope = Scope(recipients=maybe(AGENCY_NAMES), fields=fields, purposes=maybe(PURPOSES))
    return Restriction("r-generated", "P-1", kind, scope, window_of(RECORDED, None))


def _decide(
    agreements: list[Agreement],
    register: dict[str, PersonRegister],
    asked: tuple[Question, PersonFacts],
) -> bool:
    policy = compile_policy(
        revision=1, vocabulary=VOCABULARY, agreements=agreements, model_text=MODEL_TEXT
    )
    question, facts = asked
    entries = register.get(question.person_id, NO_ENTRIES)
    return evaluate_on(policy, question, replace(facts, register=entries), NOW).permit


def _covers(vocabulary: Vocabulary, names: tuple[str, ...], asked: str, tree: str) -> bool:
    catalogue = vocabulary.fields if tree == "fields" else vocabulary.purposes
    return any(catalogue.covers(name, asked) for name in names)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(partnerships(), questions())
def test_a_permit_rests_on_an_agreement_in_force_that_covers_the_request(
    partnership: list[Agreement], asked: tuple[Question, PersonFacts]
) -> None:
    policy = compile_policy(
        revision=1,
        vocabulary=VOCABULARY,
        agreements=partnership,
        model_text=MODEL_TEXT,
    )
    question, facts = asked
    decision = evaluate_on(policy, question, facts, NOW)
    if not decision.permit:
        return
    named = next(a for a in partnership if a.id == decision.agreement_id)
    assert named in _between(partnership, question)
    if decision.break_glass:  # the named agreement's break-glass block opened a leaf
        assert question.emergency
        assert any(
            _opens(named, question, leaf, facts, emergency_only=True)
            for leaf in VOCABULARY.fields.leaves_below[question.field]
        )
    # a category is all of its fields: every leaf rests on an agreement that covers it
    for leaf in VOCABULARY.fields.leaves_below[question.field]:
        assert any(
            _opens(agreement, question, leaf, facts, emergency_only=False)
            for agreement in _between(partnership, question)
        ), leaf


def _between(partnership: list[Agreement], question: Question) -> list[Agreement]:
    """The agreements in force that name the holder and the requester."""
    return [
        agreement
        for agreement in partnership
        if agreement.in_force(NOW.date())
        and question.holder in VOCABULARY.expand_agencies(agreement.providers)
        and question.requester in VOCABULARY.expand_agencies(agreement.recipients)
    ]


def _opens(
    agreement: Agreement, question: Question, leaf: str, facts: PersonFacts, *, emergency_only: bool
) -> bool:
    """Whether a grant (unless `emergency_only`) or, in an emergency, the break-glass
    block of `agreement` covers this leaf and the question's purpose."""
    block = agreement.break_glass
    by_break_glass = (
        question.emergency
        and block is not None
        and _covers(VOCABULARY, block.fields, leaf, "fields")
        and _covers(VOCABULARY, block.purposes, question.purpose, "purposes")
    )
    if emergency_only:
        return bool(by_break_glass)
    return bool(by_break_glass) or any(
        _covers(VOCABULARY, grant.fields, leaf, "fields")
        and _covers(VOCABULARY, grant.purposes, question.purpose, "purposes")
        and grant.subject.holds(facts.age)
        for grant in agreement.grants
    )


@PROPERTY
@given(partnerships(), questions(), restrictions())
def test_adding_a_restriction_never_turns_a_deny_into_a_permit(
    partnership: list[Agreement], asked: tuple[Question, PersonFacts], restriction: Restriction
) -> None:
    if not _decide(partnership, {}, asked):
        assert not _decide(partnership, {"P-1": PersonRegister(restrictions=(restriction,))}, asked)


@PROPERTY
@given(partnerships(), questions(), st.data())
def test_removing_an_agreement_never_turns_a_deny_into_a_permit(
    partnership: list[Agreement], asked: tuple[Question, PersonFacts], data: st.DataObject
) -> None:
    if not _decide(partnership, {}, asked):
        removed = data.draw(st.integers(0, len(partnership) - 1))
        fewer = partnership[:removed] + partnership[removed + 1 :]
        assert not _decide(fewer, {}, asked)
