"""Agreements managed over the API: versions, status changes, history, change log, simulation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import ScenarioService, Server

DRAFT: dict[str, Any] = {
    "id": "isa-probation-housing",
    "title": "Probation to housing risk sharing",
    "valid_from": "2025-01-01",
    "valid_until": "2099-01-01",
    "providers": ["probation"],
    "recipients": ["housing.blackpool-coastal"],
    "lawful_basis": {"article6": "public-task"},
    "grants": [{"purposes": ["crime-prevention"], "fields": ["identity.name"]}],
}
ASK = {
    "requester": "housing.blackpool-coastal",
    "holder": "probation.north-west",
    "subject": {"id": "P-900", "attributes": {"age": 40}},
    "purpose": "crime-prevention",
}


@pytest.fixture
def server(scenario_service: ScenarioService) -> Server:
    return scenario_service.server


@pytest.fixture
def engine(scenario_service: ScenarioService) -> Engine:
    return scenario_service.engine


def _decide(server: Server, field: str) -> dict[str, Any]:
    response = server.post("/v1/decisions", json={**ASK, "field": field})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _audit_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)


def test_the_whole_lifecycle_of_an_agreement(server: Server) -> None:
    created = server.post("/v1/agreements", json=DRAFT)
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["status"]) == (1, "draft")
    assert created.json()["created_by"] == server.client_id
    assert _decide(server, "identity.name")["reasons"][0]["code"] == "agreement-not-in-force"

    path = "/v1/agreements/isa-probation-housing"
    active = server.post(f"{path}/activate", json={"reason": "signed by both parties"})
    assert (active.json()["version"], active.json()["status"]) == (2, "active")
    permit = _decide(server, "identity.name")
    assert permit["decision"] == "permit"
    assert permit["reasons"][0]["agreement_version"] == 2
    assert _decide(server, "identity.date-of-birth")["reasons"][0]["code"] == "field-not-covered"

    wider = {
        **DRAFT,
        "grants": [
            {
                "purposes": ["crime-prevention"],
                "fields": ["identity.name", "identity.date-of-birth"],
            }
        ],
    }
    revised = server.post(f"{path}/versions", json={"document": wider, "reason": "add dob"})
    assert (revised.json()["version"], revised.json()["status"]) == (3, "active")
    assert _decide(server, "identity.date-of-birth")["reasons"][0]["agreement_version"] == 3

    suspended = server.post(f"{path}/suspend", json={"reason": "data breach under review"})
    assert suspended.json()["status"] == "suspended"
    denied = _decide(server, "identity.name")  # the very next decision
    assert (denied["decision"], denied["reasons"][0]["code"]) == ("deny", "agreement-not-in-force")

    revoked = server.post(f"{path}/revoke", json={"reason": "partnership ended"})
    assert (revoked.json()["version"], revoked.json()["status"]) == (5, "revoked")
    for late in (
        server.post(f"{path}/activate", json={"reason": "again"}),
        server.post(f"{path}/versions", json={"document": DRAFT}),
    ):
        assert late.status_code == 409
        assert late.headers["content-type"] == "application/problem+json"

    history = server.get(f"{path}/versions").json()
    assert [(v["version"], v["status"], v["change"]) for v in history] == [
        (1, "draft", "created"),
        (2, "active", "activated"),
        (3, "active", "revised"),
        (4, "suspended", "suspended"),
        (5, "revoked", "revoked"),
    ]
    assert history[0]["document"]["grants"] == DRAFT["grants"]  # the old version stays readable
    assert {v["created_by"] for v in history} == {server.client_id}
    assert history[3]["reason"] == "data breach under review"

    changes = server.get(
        "/v1/changes", params={"target_type": "agreement", "target_id": "isa-probation-housing"}
    ).json()["items"]
    assert [c["action"] for c in reversed(changes)] == [
        "agreement.created",
        "agreement.activated",
        "agreement.revised",
        "agreement.suspended",
        "agreement.revoked",
    ]
    suspend = next(c for c in changes if c["action"] == "agreement.suspended")
    assert suspend["actor"] == server.client_id
    assert (suspend["before"]["status"], suspend["after"]["status"]) == ("active", "suspended")


@pytest.mark.parametrize(
    ("change", "status", "place"),
    [
        ({"status": "active"}, 422, "status"),
        (
            {"grants": [{"purposes": ["crime-prevention"], "fields": ["identity.shoe"]}]},
            422,
            "grants[0].fields[0]",
        ),
        ({"valid_until": "2020-01-01"}, 422, "valid_until"),
        ({"id": "isa-blackpool-mash"}, 409, None),
    ],
)
def test_invalid_writes_are_refused_naming_the_place(
    server: Server, change: dict[str, Any], status: int, place: str | None
) -> None:
    response = server.post("/v1/agreements", json={**DRAFT, "id": "isa-never-stored", **change})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if place:
        assert place in [param["name"] for param in response.json()["invalid_params"]]


@pytest.mark.parametrize(
    ("change", "place"),
    [
        ({"title": "Probation\u0000 to housing"}, "title"),
        ({"title": "Probation \ud800"}, "title"),  # an unpaired surrogate: not UTF-8
        ({"lawful_basis": {"article6": "public\u0000task"}}, "lawful_basis.article6"),
        (
            {
                "grants": [
                    {
                        "purposes": ["crime-prevention"],
                        "fields": ["contact.address"],
                        "obligations": [{"field": "contact.address", "mask": "\udc00"}],
                    }
                ]
            },
            "grants[0].obligations[0].mask",
        ),
    ],
)
def test_text_an_agreement_cannot_store_is_refused_naming_the_place(
    server: Server, change: dict[str, Any], place: str
) -> None:
    """An agreement's texts are stored and read back by every replica: no NUL, no unpaired
    surrogate, as every other text the service takes (sent as JSON escapes)."""
    for path, body in (
        ("/v1/agreements", {**DRAFT, "id": "isa-never-stored", **change}),
        (
            "/v1/agreements/isa-blackpool-mash/versions",
            {"document": {**DRAFT, "id": "isa-blackpool-mash", **change}},
        ),
        (
            "/v1/simulate",
            {"request": {**ASK, "fields": ["identity.name"]}, "agreement": {**DRAFT, **change}},
        ),
    ):
        response = server.post(
            path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        params = {p["name"]: p["reason"] for p in response.json()["invalid_params"]}
        assert params[place].startswith("must not contain"), params
    assert server.get("/v1/agreements/isa-never-stored").status_code == 404


def test_a_new_version_is_a_whole_document_with_its_id(server: Server) -> None:
    """The schema asks for the whole document, id included: one without is refused."""
    without_id = {key: value for key, value in DRAFT.items() if key != "id"}
    response = server.post(
        "/v1/agreements/isa-blackpool-mash/versions", json={"document": without_id}
    )
    assert response.status_code == 422, response.text
    assert "id" in [param["name"] for param in response.json()["invalid_params"]]


def test_status_changes_follow_the_lifecycle(server: Server) -> None:
    path = "/v1/agreements/isa-blackpool-mash"
    assert server.post(f"{path}/activate", json={"reason": "x"}).status_code == 409
    assert (
        server.post("/v1/agreements/isa-nothing/suspend", json={"reason": "x"}).status_code == 404
    )
    assert server.post(f"{path}/suspend", json={}).status_code == 422  # a reason is required


def test_simulation_answers_like_a_decision_and_records_nothing(
    server: Server, engine: Engine
) -> None:
    before = _audit_rows(engine)
    body = {"request": {**ASK, "fields": ["identity.name", "identity.date-of-birth"]}}
    live = server.post("/v1/simulate", json=body)
    assert live.status_code == 200, live.text
    assert live.json()["simulation"] is True
    assert live.json()["permitted"] == []

    draft = {**DRAFT, "id": "isa-probation-housing-draft"}
    with_draft = server.post("/v1/simulate", json={**body, "agreement": draft}).json()
    assert with_draft["permitted"] == ["identity.name"]
    assert all(d["decision_id"] is None for d in with_draft["decisions"])
    assert with_draft["decisions"][0]["reasons"][0]["agreement_id"] == draft["id"]
    bad = server.post("/v1/simulate", json={**body, "agreement": {**draft, "grants": []}})
    assert bad.status_code == 422
    assert _audit_rows(engine) == before
    assert server.get(f"/v1/agreements/{draft['id']}").status_code == 404  # never went live
