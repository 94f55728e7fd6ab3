"""The engine alone (no web, no database): the scenario cases, and time and age edges."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.decision.engine import PersonFacts, Question
from app.decision.policy_tests import register_of
from app.policy.agreements import parse_agreement
from app.policy.compiler import compile_policy
from app.policy.register import NO_ENTRIES
from tests.conftest import SCENARIO, load_yaml
from tests.scenario import (
    MODEL_TEXT,
    evaluate_on,
    scenario_agreements,
    scenario_policy,
    scenario_register,
    scenario_vocabulary,
)

RECORDED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DECIDABLE = [c for c in load_yaml(SCENARIO / "cases.yaml")["cases"] if "status" not in c["expect"]]


def _question(
    request: dict[str, Any], field: str | None = None, recorded_at: datetime = RECORDED
) -> tuple[Question, PersonFacts]:
    """The request's question, and the person's facts with their scenario register entries."""
    subject = request["subject"]
    question = Question(
        requester=request["requester"],
        holder=request["holder"],
        person_id=subject["id"],
        field=field or request["field"],
        purpose=request["purpose"],
        emergency=bool(request.get("context", {}).get("emergency")),
    )
    entries = scenario_register(recorded_at).get(subject["id"], NO_ENTRIES)
    age = subject.get("attributes", {}).get("age")
    return question, PersonFacts(subject["id"], age, register=entries)


@pytest.mark.parametrize("case", DECIDABLE, ids=[c["name"] for c in DECIDABLE])
def test_scenario_case_on_the_engine(case: dict[str, Any]) -> None:
    policy = scenario_policy()
    decision = evaluate_on(policy, *_question(case["request"]), NOW)
    expect = case["expect"]
    assert ("permit" if decision.permit else "deny") == expect["decision"]
    assert decision.reason == expect["reason"]
    assert decision.agreement_id == expect.get("agreement", decision.agreement_id)
    assert decision.restriction_id == expect.get("restriction", decision.restriction_id)
    assert decision.break_glass is expect.get("break_glass", False)
    assert decision.overridden_objection_id == expect.get("overridden")


def test_a_register_entry_applies_only_from_when_it_was_recorded() -> None:
    policy = scenario_policy()
    sealed = next(c for c in DECIDABLE if c["name"] == "a sealed address is never shared")[
        "request"
    ]
    later = NOW + timedelta(hours=1)
    assert evaluate_on(policy, *_question(sealed, recorded_at=later), NOW).permit
    asked = _question(sealed, recorded_at=later)
    assert not evaluate_on(policy, *asked, NOW + timedelta(hours=2)).permit


def test_a_lapsed_consent_stops_permitting_at_its_until() -> None:
    policy = scenario_policy()
    question = Question(
        "la.blackpool.early-help",
        "edu.blackpool-schools",
        "P-301",
        "education.attendance",
        "early-help",
    )
    facts = PersonFacts("P-301", 15, register=scenario_register(RECORDED)["P-301"])
    assert evaluate_on(policy, question, facts, NOW).permit
    after = datetime(2099, 1, 1, tzinfo=UTC)
    decision = evaluate_on(policy, question, facts, after)
    assert not decision.permit


def test_validity_window_takes_effect_at_its_boundary_without_recompiling() -> None:
    vocabulary = scenario_vocabulary()
    document = load_yaml(SCENARIO / "agreements" / "isa-police-housing-future.yaml")
    policy = compile_policy(
        revision=1,
        vocabulary=vocabulary,
        agreements=[parse_agreement(document, vocabulary)],
        model_text=MODEL_TEXT,
    )
    question = Question(
        "housing.blackpool-coastal",
        "police.lancashire",
        "P-1",
        "identity.name",
        "crime-prevention",
    )
    facts = PersonFacts("P-1", 30)
    start = datetime.combine(date(2098, 1, 1), datetime.min.time(), tzinfo=UTC)
    before = evaluate_on(policy, question, facts, start - timedelta(seconds=1))
    assert (before.permit, before.reason) == (False, "agreement-not-in-force")
    assert evaluate_on(policy, question, facts, start).permit
    end = datetime(2099, 1, 1, tzinfo=UTC)
    assert evaluate_on(policy, question, facts, end - timedelta(seconds=1)).permit
    assert not evaluate_on(policy, question, facts, end).permit


@pytest.mark.parametrize(("age", "permit"), [(17, True), (18, False), (0, True), (None, False)])
def test_age_bounds_are_inclusive_and_an_unknown_age_fails(age: int | None, permit: bool) -> None:
    policy = scenario_policy()
    question = Question(
        "la.blackpool.childrens-services",
        "police.lancashire",
        "P-5",
        "criminal.convictions",
        "safeguarding.children",
    )
    assert evaluate_on(policy, question, PersonFacts("P-5", age), NOW).permit is permit


def test_obligations_reach_only_the_fields_they_name() -> None:
    vocabulary = scenario_vocabulary()
    document = load_yaml(SCENARIO / "agreements" / "isa-blackpool-mash.yaml")
    document["grants"][0]["obligations"] = [
        {"field": "contact.address", "mask": "postcode-district"}
    ]
    policy = compile_policy(
        revision=1,
        vocabulary=vocabulary,
        agreements=[parse_agreement(document, vocabulary)],
        model_text=MODEL_TEXT,
    )
    base = ("la.blackpool.childrens-services", "police.lancashire", "P-1")
    facts = PersonFacts("P-1", 10)
    address = evaluate_on(
        policy, Question(*base, "contact.address", "safeguarding.children"), facts, NOW
    )
    phone = evaluate_on(
        policy, Question(*base, "contact.phone", "safeguarding.children"), facts, NOW
    )
    assert [(o.field, o.mask) for o in address.obligations] == [
        ("contact.address", "postcode-district")
    ]
    assert phone.permit and phone.obligations == ()


ADULT = {
    "requester": "la.blackpool.adult-services",
    "subject": {"id": "P-201", "attributes": {"age": 34}},
    "purpose": "safeguarding.adults",
}


def test_a_restricted_leaf_decides_a_category_over_an_earlier_uncovered_one() -> None:
    vocabulary = scenario_vocabulary()
    seal = {"id": "r-seal-mental", "person": "P-500", "kind": "sealed", "fields": ["health.mental"]}
    policy = compile_policy(
        revision=1,
        vocabulary=vocabulary,
        agreements=scenario_agreements(vocabulary),
        model_text=MODEL_TEXT,
    )
    entries = register_of({"restrictions": [seal]}, RECORDED)["P-500"]
    facts = PersonFacts("P-500", 34, register=entries)
    # from the police, health.physical is not granted; health.mental is, but it is sealed
    request = {**ADULT, "holder": "police.lancashire", "field": "health"}
    question = replace(_question(request)[0], person_id="P-500")
    decision = evaluate_on(policy, question, facts, NOW)
    physical = replace(question, field="health.physical")
    assert not evaluate_on(policy, physical, facts, NOW).permit
    assert (decision.permit, decision.reason) == (False, "person-restriction")
    assert decision.restriction_id == "r-seal-mental"
    assert decision.field == "health"
    assert decision.message.startswith("health.mental: ")


def test_a_category_is_denied_with_the_first_leaf_no_grant_covers() -> None:
    policy = scenario_policy()
    request = {
        **ADULT,
        "holder": "nhs.blackpool-hospitals",
        "subject": {"id": "P-202", "attributes": {"age": 80}},
        "field": "identity",
    }
    decision = evaluate_on(policy, *_question(request), NOW)
    first_uncovered = next(
        leaf
        for leaf in policy.vocabulary.fields.leaves_below["identity"]
        if not evaluate_on(policy, *_question(request, field=leaf), NOW).permit
    )
    assert (decision.permit, decision.reason) == (False, "field-not-covered")
    assert decision.message.startswith(f"{first_uncovered}: ")


def test_a_category_that_needs_break_glass_for_one_leaf_is_a_break_glass_permit() -> None:
    policy = scenario_policy()
    request = {
        **ADULT,
        "holder": "nhs.blackpool-hospitals",
        "subject": {"id": "P-202", "attributes": {"age": 80}},
        "field": "identity",
        "context": {"emergency": True},
    }
    decision = evaluate_on(policy, *_question(request), NOW)
    assert (decision.permit, decision.reason, decision.break_glass) == (True, "break-glass", True)
    assert decision.agreement_id == "isa-adult-safeguarding"
    assert decision.overridden_objection_id is None


def test_break_glass_over_an_objection_on_a_category_names_the_objection() -> None:
    policy = scenario_policy()
    request = {
        **ADULT,
        "holder": "nhs.lancashire-mental-health",
        "field": "health",
        "context": {"emergency": True},
    }
    decision = evaluate_on(policy, *_question(request), NOW)
    assert (decision.permit, decision.break_glass) == (True, True)
    assert decision.overridden_objection_id == "r-objection-health"
    assert decision.restriction_id is None
