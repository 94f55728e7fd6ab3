"""Access plans (POST /v1/plans, issue 16) on the shared Blackpool scenario through the HTTP
API on a real database: a plan agrees, field by field, with batch decisions for the same
parties and person, and records nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import ScenarioService, create_key, scenario_env, wait_until

CHILDREN, EARLY_HELP = "la.blackpool.childrens-services", "la.blackpool.early-help"
PLACES = ("with_consent", "within_age_bounds", "break_glass_only")
FIRST_ROUTE = {"consent": "with_consent", "subject-condition": "within_age_bounds"}


def _audit_rows(service: ScenarioService) -> int:
    with Session(service.engine) as session:
        return int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)


def _plan(service: ScenarioService, **body: Any) -> dict[str, Any]:
    response = service.server.post("/v1/plans", json=body)
    assert response.status_code == 200, response.text
    plan: dict[str, Any] = response.json()
    return plan


def _place(routes: list[dict[str, Any]]) -> str | None:
    """Where a plan puts a denied field: the first of consent, age bounds, break-glass."""
    kinds = {route["kind"] for route in routes}
    for kind, place in (*FIRST_ROUTE.items(), ("break-glass", "break_glass_only")):
        if kind in kinds:
            return place
    return None


@pytest.mark.parametrize(
    ("requester", "purpose", "subject"),
    [
        (CHILDREN, "safeguarding.children", {"id": "P-101", "attributes": {"age": 12}}),
        (CHILDREN, "safeguarding.children", {"id": "P-102", "attributes": {"age": 9}}),  # sealed
        (CHILDREN, "safeguarding.children", {"attributes": {"age": 30}}),
        (
            "la.blackpool.adult-services",
            "safeguarding.adults",
            {"id": "P-201", "attributes": {"age": 34}},
        ),
        (EARLY_HELP, "early-help", {"id": "P-303", "attributes": {"age": 8}}),
    ],
)
def test_a_plan_agrees_field_by_field_with_batch_decisions(
    scenario_service: ScenarioService, requester: str, purpose: str, subject: dict[str, Any]
) -> None:
    before = _audit_rows(scenario_service)
    plan = _plan(scenario_service, requester=requester, purpose=purpose, subject=subject)
    assert _audit_rows(scenario_service) == before, "a plan records nothing"
    assert plan["holders"], "the requester has agreements with some holders"
    person = subject.get("id", "P-PLAN-ANYONE")
    for holder in plan["holders"]:
        batch = scenario_service.server.post(
            "/v1/decisions/batch",
            json={
                "requester": requester,
                "holder": holder["holder"],
                "subject": {**subject, "id": person},
                "fields": "*",
                "purpose": purpose,
            },
        ).json()
        planned = {
            place: {item["field"] for item in holder[place]} for place in ("permitted", *PLACES)
        }
        assert planned["permitted"] == set(batch["permitted"]), holder["holder"]
        for decision in batch["decisions"]:
            if decision["decision"] == "deny":
                place = _place(decision["routes"])
                where = {p for p in PLACES if decision["field"] in planned[p]}
                assert where == ({place} if place else set()), (holder["holder"], decision)


def test_a_persons_register_entries_are_listed_and_a_seal_is_in_no_list(
    scenario_service: ScenarioService,
) -> None:
    plan = _plan(
        scenario_service,
        requester=CHILDREN,
        purpose="safeguarding.children",
        holder="police.lancashire",
        subject={"id": "P-102", "attributes": {"age": 9}},
    )
    [holder] = plan["holders"]
    listed = {item["field"] for place in ("permitted", *PLACES) for item in holder[place]}
    assert "contact.address" not in listed and "contact.phone" in listed
    assert [(entry["id"], entry["kind"]) for entry in plan["register_entries"]] == [
        ("r-sealed-address", "sealed")
    ]
    assert plan["person_id"] == "P-102" and plan["policy_revision"] >= 1


def test_consent_based_sharing_is_planned_as_with_consent(
    scenario_service: ScenarioService,
) -> None:
    plan = _plan(
        scenario_service,
        requester=EARLY_HELP,
        purpose="early-help",
        holder="edu.blackpool-schools",
        subject={"id": "P-303", "attributes": {"age": 8}},
    )
    [holder] = plan["holders"]
    assert holder["permitted"] == []
    assert {item["field"] for item in holder["with_consent"]} >= {"education.attendance"}
    assert {item["agreement_id"] for item in holder["with_consent"]} == {"isa-early-help"}


def test_an_age_bound_is_planned_with_its_bounds(scenario_service: ScenarioService) -> None:
    plan = _plan(
        scenario_service,
        requester=CHILDREN,
        purpose="safeguarding.children",
        holder="police.lancashire",
        subject={"attributes": {"age": 30}},
    )
    [holder] = plan["holders"]
    bounded = {item["field"]: item for item in holder["within_age_bounds"]}
    assert bounded["criminal.convictions"]["max_age"] == 17
    assert bounded["criminal.convictions"]["agreement_id"] == "isa-blackpool-mash"


def test_a_plan_is_bound_to_the_clients_agencies(scenario_service: ScenarioService) -> None:
    env = scenario_env(scenario_service.database_url)
    key = create_key(env, "plan-police", scopes="decide", agencies="police.lancashire")
    server = scenario_service.server
    assert wait_until(lambda: server.get("/v1/vocabulary", key=key).status_code == 200, 5)
    body = {"requester": CHILDREN, "purpose": "safeguarding.children"}
    assert server.post("/v1/plans", json=body, key=key).status_code == 403
    mine = server.post("/v1/plans", json={**body, "holder": "police.lancashire"}, key=key)
    assert mine.status_code == 200, mine.text
    assert [holder["holder"] for holder in mine.json()["holders"]] == ["police.lancashire"]
    unknown = {"requester": CHILDREN, "purpose": "safeguarding.kids"}
    refused = server.post("/v1/plans", json=unknown)
    assert refused.status_code == 422 and refused.json()["invalid_params"][0]["name"] == "purpose"
