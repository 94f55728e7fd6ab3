"""Lawful routes on a deny (issue 16), on the shared Blackpool scenario through the HTTP API
on a real database: each route is the way the same question between the same parties
would be permitted, never one a restriction on the person forbids."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.policy.files import agreement_documents, load_vocabulary
from app.store.tables import AuditDecision
from tests.conftest import SCENARIO, ScenarioService

CHILDREN, EARLY_HELP = "la.blackpool.childrens-services", "la.blackpool.early-help"
VOCABULARY = load_vocabulary(SCENARIO / "vocabulary.yaml")
AGREEMENTS = {
    document["id"]: document for _, document in agreement_documents(SCENARIO / "agreements")
}


def _between(requester: str, holder: str) -> set[str]:
    """The ids of the scenario's agreements whose parties include these two agencies."""
    return {
        agreement_id
        for agreement_id, document in AGREEMENTS.items()
        if requester in VOCABULARY.expand_agencies(document["recipients"])
        and holder in VOCABULARY.expand_agencies(document["providers"])
    }


def _ask(
    service: ScenarioService,
    requester: str,
    holder: str,
    field: str,
    purpose: str,
    person: str = "P-900",
    age: int | None = 12,
    **context: Any,
) -> dict[str, Any]:
    attributes = {} if age is None else {"age": age}
    body = {
        "requester": requester,
        "holder": holder,
        "subject": {"id": person, "attributes": attributes},
        "field": field,
        "purpose": purpose,
        "context": context,
    }
    response = service.server.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    for route in answer["routes"]:  # never across other parties
        assert route["agreement_id"] in _between(requester, holder), route
    return answer


def _kinds(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {route["kind"]: route for route in answer["routes"]}


def test_consent_required_offers_the_consent_route(scenario_service: ScenarioService) -> None:
    answer = _ask(
        scenario_service, EARLY_HELP, "edu.blackpool-schools", "education.attendance", "early-help"
    )
    assert (answer["decision"], answer["reasons"][0]["code"]) == ("deny", "consent-required")
    route = _kinds(answer)["consent"]
    assert (route["agreement_id"], route["agreement_version"]) == ("isa-early-help", 1)
    assert "consent" in route["message"] and "none is recorded" in route["message"]
    # the route is right: with a live consent the same question is permitted
    consented = _ask(
        scenario_service,
        EARLY_HELP,
        "edu.blackpool-schools",
        "education.attendance",
        "early-help",
        person="P-301",  # c-family-301, live
    )
    assert consented["decision"] == "permit" and consented["routes"] == []


def test_a_deny_that_break_glass_would_permit_offers_it(scenario_service: ScenarioService) -> None:
    answer = _ask(
        scenario_service,
        CHILDREN,
        "nhs.blackpool-hospitals",
        "health.physical",
        "safeguarding.children",
    )
    assert (answer["decision"], answer["reasons"][0]["code"]) == ("deny", "field-not-covered")
    assert set(_kinds(answer)) == {"break-glass"}
    assert _kinds(answer)["break-glass"]["agreement_id"] == "isa-blackpool-mash"
    emergency = _ask(
        scenario_service,
        CHILDREN,
        "nhs.blackpool-hospitals",
        "health.physical",
        "safeguarding.children",
        emergency=True,
        justification="Child admitted unconscious, history needed now",
    )
    assert emergency["decision"] == "permit" and emergency["break_glass"] is True


def test_an_expired_agreement_is_a_route_with_its_dates(scenario_service: ScenarioService) -> None:
    answer = _ask(
        scenario_service,
        "police.lancashire",
        "probation.north-west",
        "criminal.convictions",
        "crime-prevention",
        age=40,
    )
    assert (answer["decision"], answer["reasons"][0]["code"]) == ("deny", "agreement-not-in-force")
    route = _kinds(answer)["agreement-not-in-force"]
    assert route["agreement_id"] == "isa-probation-police-2020"
    assert (route["status"], route["valid_from"], route["valid_until"]) == (
        "active",
        "2020-01-01",
        "2021-01-01",
    )
    assert "in force only from 2020-01-01 until 2021-01-01" in route["message"]


@pytest.mark.parametrize(
    ("requester", "holder", "field", "purpose", "agreement", "status"),
    [
        (
            "edu.blackpool-schools",
            "nhs.blackpool-hospitals",
            "health.physical",
            "safeguarding.children",
            "isa-health-schools-draft",
            "draft",
        ),
        (
            "police.lancashire",
            "housing.blackpool-coastal",
            "contact.address",
            "crime-prevention",
            "isa-housing-police",
            "suspended",
        ),
    ],
)
def test_a_draft_or_suspended_agreement_is_a_route_naming_its_status(
    scenario_service: ScenarioService,
    requester: str,
    holder: str,
    field: str,
    purpose: str,
    agreement: str,
    status: str,
) -> None:
    answer = _ask(scenario_service, requester, holder, field, purpose, age=30)
    assert answer["decision"] == "deny"
    route = _kinds(answer)["agreement-not-in-force"]
    assert (route["agreement_id"], route["status"]) == (agreement, status)
    assert f"it is {status}" in route["message"]


def test_a_seal_has_no_route(scenario_service: ScenarioService) -> None:
    for context in ({}, {"emergency": True, "justification": "Child missing overnight"}):
        answer = _ask(
            scenario_service,
            CHILDREN,
            "police.lancashire",
            "contact.address",
            "safeguarding.children",
            person="P-102",
            age=9,
            **context,
        )
        assert (answer["decision"], answer["reasons"][0]["code"]) == ("deny", "person-restriction")
        assert answer["routes"] == []
    # the same question about a person without the seal is permitted: the seal alone denies
    unsealed = _ask(
        scenario_service,
        CHILDREN,
        "police.lancashire",
        "contact.address",
        "safeguarding.children",
        age=9,
    )
    assert unsealed["decision"] == "permit"


def test_an_age_bound_is_a_route_saying_whether_the_age_was_known(
    scenario_service: ScenarioService,
) -> None:
    for age in (30, None):
        answer = _ask(
            scenario_service,
            CHILDREN,
            "police.lancashire",
            "criminal.convictions",
            "safeguarding.children",
            age=age,
        )
        assert answer["decision"] == "deny"
        route = _kinds(answer)["subject-condition"]
        assert route["agreement_id"] == "isa-blackpool-mash"
        assert (route["min_age"], route["max_age"], route["age_unknown"]) == (None, 17, age is None)
        assert "aged 17 or under" in route["message"]


def test_the_audit_row_of_a_deny_records_the_routes_offered(
    scenario_service: ScenarioService,
) -> None:
    answer = _ask(
        scenario_service, EARLY_HELP, "edu.blackpool-schools", "education.attendance", "early-help"
    )
    permit = _ask(
        scenario_service,
        CHILDREN,
        "police.lancashire",
        "criminal.convictions",
        "safeguarding.children",
    )
    with Session(scenario_service.engine) as session:
        rows = session.execute(
            select(AuditDecision.decision_id, AuditDecision.routes_offered).where(
                AuditDecision.decision_id.in_([answer["decision_id"], permit["decision_id"]])
            )
        ).all()
    offered = {decision_id: routes for decision_id, routes in rows}
    assert offered == {
        answer["decision_id"]: [route["kind"] for route in answer["routes"]],
        permit["decision_id"]: [],
    }
    assert offered[answer["decision_id"]], "the consent route was offered"
