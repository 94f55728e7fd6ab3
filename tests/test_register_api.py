"""The person register through the HTTP API of a real server (scenario agreements).

A data controller records objections, seals and consents; the very next
decision must honour them, and removing one must undo it while keeping the
record of who removed it and when.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision, RegisterEntry
from tests.conftest import ScenarioService

CHILD_CONVICTIONS = {
    "requester": "la.blackpool.childrens-services",
    "holder": "police.lancashire",
    "field": "criminal.convictions",
    "purpose": "safeguarding.children",
}
EARLY_HELP_ATTENDANCE = {
    "requester": "la.blackpool.early-help",
    "holder": "edu.blackpool-schools",
    "field": "education.attendance",
    "purpose": "early-help",
}


def new_person() -> str:
    return f"P-REG-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(scenario_service: ScenarioService) -> Iterator[httpx.Client]:
    with scenario_service.server.client() as client:
        yield client


def decide(api: httpx.Client, person: str, request: dict[str, Any], age: int) -> dict[str, Any]:
    body = {**request, "subject": {"id": person, "attributes": {"age": age}}}
    response = api.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"]
    return problem


def listing(api: httpx.Client, person: str, include_removed: bool = False) -> list[dict[str, Any]]:
    params = {"person": person, "include_removed": str(include_removed).lower()}
    response = api.get("/v1/register", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["person_id"] == person
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def test_a_restriction_is_recorded_with_who_and_when(api: httpx.Client) -> None:
    person, other = new_person(), new_person()
    before = datetime.now(UTC) - timedelta(seconds=5)
    response = api.post(
        "/v1/register/restrictions",
        json={
            "id": f"r-{person}",
            "person": person,
            "kind": "sealed",
            "fields": ["contact.address"],
            "reason": "protected address (refuge)",
        },
    )
    assert response.status_code == 201, response.text
    entry = response.json()
    assert (entry["id"], entry["person_id"], entry["kind"]) == (f"r-{person}", person, "sealed")
    assert entry["fields"] == ["contact.address"]
    assert entry["recipients"] is None and entry["purposes"] is None
    assert entry["recorded_by"]
    assert before <= datetime.fromisoformat(entry["recorded_at"]) <= datetime.now(UTC)
    assert entry["removed_at"] is None and entry["removed_by"] is None

    consent = api.post(
        "/v1/register/consents",
        json={"person": other, "purposes": ["early-help"], "reason": "signed form"},
    )
    assert consent.status_code == 201, consent.text
    assert consent.json()["kind"] == "consent" and consent.json()["id"]

    assert [e["id"] for e in listing(api, person)] == [f"r-{person}"]
    assert [e["id"] for e in listing(api, other)] == [consent.json()["id"]]
    assert listing(api, new_person()) == []


def test_an_objection_denies_the_next_decision_and_removing_it_restores_the_permit(
    api: httpx.Client, scenario_service: ScenarioService
) -> None:
    person = new_person()
    assert decide(api, person, CHILD_CONVICTIONS, age=12)["decision"] == "permit"

    entry_id = f"obj-{person}"
    added = api.post(
        "/v1/register/restrictions",
        json={
            "id": entry_id,
            "person": person,
            "kind": "objection",
            "recipients": ["la.blackpool.childrens-services"],
            "reason": "objected by letter",
        },
    )
    assert added.status_code == 201, added.text

    denied = decide(api, person, CHILD_CONVICTIONS, age=12)
    assert denied["decision"] == "deny"
    assert denied["reasons"][0]["code"] == "person-restriction"
    assert denied["reasons"][0]["restriction_id"] == entry_id
    with Session(scenario_service.engine) as session:
        row = session.scalars(
            select(AuditDecision).where(AuditDecision.decision_id == denied["decision_id"])
        ).one()
    assert (row.decision, row.reason, row.restriction_id) == (
        "deny",
        "person-restriction",
        entry_id,
    )

    assert api.delete(f"/v1/register/{entry_id}").status_code == 204
    permitted = decide(api, person, CHILD_CONVICTIONS, age=12)
    assert permitted["decision"] == "permit"
    assert permitted["reasons"][0]["code"] == "agreement"
    # the register is data: recording and removing entries compiled nothing
    assert permitted["policy_revision"] == denied["policy_revision"]

    assert listing(api, person) == []
    [removed] = listing(api, person, include_removed=True)
    assert removed["id"] == entry_id
    assert removed["removed_by"] and removed["removed_at"]
    assert datetime.fromisoformat(removed["removed_at"]) >= datetime.fromisoformat(
        removed["recorded_at"]
    )
    with Session(scenario_service.engine) as session:
        stored = session.get(RegisterEntry, entry_id)
        assert stored is not None and stored.removed_at is not None


def test_a_recorded_consent_opens_consent_based_sharing(api: httpx.Client) -> None:
    person = new_person()
    before = decide(api, person, EARLY_HELP_ATTENDANCE, age=14)
    assert (before["decision"], before["reasons"][0]["code"]) == ("deny", "consent-required")

    consent = api.post(
        "/v1/register/consents",
        json={
            "id": f"c-{person}",
            "person": person,
            "purposes": ["early-help"],
            "recipients": ["la.blackpool.early-help"],
            "until": "2099-01-01",
            "reason": "family signed the early help consent form",
        },
    )
    assert consent.status_code == 201, consent.text

    after = decide(api, person, EARLY_HELP_ATTENDANCE, age=14)
    assert after["decision"] == "permit"
    assert after["reasons"][0]["code"] == "agreement"
    assert after["reasons"][0]["agreement_id"] == "isa-early-help"
    assert after["reasons"][0]["consent_id"] == f"c-{person}"


def test_a_duplicate_id_is_a_conflict(api: httpx.Client) -> None:
    person = new_person()
    body = {"id": f"dup-{person}", "person": person, "kind": "objection", "reason": "letter"}
    assert api.post("/v1/register/restrictions", json=body).status_code == 201
    problem = assert_problem(api.post("/v1/register/restrictions", json=body), 409)
    assert f"dup-{person}" in problem["detail"]
    consent = {"id": f"dup-{person}", "person": person, "reason": "form"}
    assert_problem(api.post("/v1/register/consents", json=consent), 409)
    assert len(listing(api, person)) == 1


@pytest.mark.parametrize(
    ("dimension", "name"),
    [
        ("fields", "health.shoe-size"),
        ("purposes", "marketing"),
        ("recipients", "la.preston.childrens-services"),
    ],
)
def test_an_unknown_name_is_refused_and_named(api: httpx.Client, dimension: str, name: str) -> None:
    person = new_person()
    body = {"person": person, "kind": "objection", "reason": "letter", dimension: [name]}
    problem = assert_problem(api.post("/v1/register/restrictions", json=body), 422)
    assert name in problem["detail"]
    assert problem["invalid_params"][0]["name"].startswith(dimension)
    assert listing(api, person, include_removed=True) == []


def test_a_sealed_restriction_must_name_its_fields(api: httpx.Client) -> None:
    person = new_person()
    body = {"person": person, "kind": "sealed", "reason": "protected"}
    problem = assert_problem(api.post("/v1/register/restrictions", json=body), 422)
    assert problem["invalid_params"][0]["name"] == "fields"
    assert listing(api, person, include_removed=True) == []


def test_removing_an_unknown_or_removed_entry(api: httpx.Client) -> None:
    assert_problem(api.delete(f"/v1/register/no-such-{uuid.uuid4().hex}"), 404)

    person = new_person()
    body = {"id": f"twice-{person}", "person": person, "kind": "objection", "reason": "letter"}
    assert api.post("/v1/register/restrictions", json=body).status_code == 201
    assert api.delete(f"/v1/register/twice-{person}").status_code == 204
    first = listing(api, person, include_removed=True)[0]
    assert_problem(api.delete(f"/v1/register/twice-{person}"), 409)
    assert listing(api, person, include_removed=True)[0]["removed_at"] == first["removed_at"]


def test_an_until_at_the_edge_of_the_calendar_is_not_a_crash(
    scenario_service: ScenarioService,
) -> None:
    person = new_person()
    body = {"person": person, "reason": "form", "until": "9999-12-31T23:59:59-05:00"}
    response = scenario_service.server.post("/v1/register/consents", json=body)
    assert response.status_code in (201, 422), response.text
