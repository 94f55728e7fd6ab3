"""The shared Blackpool scenario, unchanged, through the HTTP API of a real server.

Every answer is checked against the case and against its row in the audit
table, read directly from the database.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import SCENARIO, ScenarioService, jsonable, load_yaml

SCENARIO_CASES = load_yaml(SCENARIO / "cases.yaml")
CASES = SCENARIO_CASES["cases"]
BATCHES = SCENARIO_CASES["batches"]


def _body(request: dict[str, Any]) -> dict[str, Any]:
    body = {key: jsonable(value) for key, value in request.items()}
    body.setdefault("context", {})
    return body


def _audit_row(service: ScenarioService, decision_id: str) -> AuditDecision:
    with Session(service.engine) as session:
        return session.scalars(
            select(AuditDecision).where(AuditDecision.decision_id == decision_id)
        ).one()


def _audit_count(service: ScenarioService) -> int:
    with Session(service.engine) as session:
        return int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)


def test_all_scenario_cases_are_present() -> None:
    assert len(CASES) == 35
    assert len(BATCHES) == 1


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_scenario_case(scenario_service: ScenarioService, case: dict[str, Any]) -> None:
    request, expect = case["request"], case["expect"]
    rows_before = _audit_count(scenario_service)
    response = scenario_service.server.post("/v1/decisions", json=_body(request))

    if "status" in expect:
        assert response.status_code == expect["status"], response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        bad_part = [p["name"] for p in problem["invalid_params"]]
        assert bad_part, problem
        assert _audit_count(scenario_service) == rows_before, "a refused request left a row"
        return

    assert response.status_code == 200, response.text
    answer = response.json()
    reason = answer["reasons"][0]
    assert answer["decision"] == expect["decision"]
    assert reason["code"] == expect["reason"]
    if "agreement" in expect:
        assert reason["agreement_id"] == expect["agreement"]
        assert reason["agreement_version"] == 1
    if "restriction" in expect:
        assert reason["restriction_id"] == expect["restriction"]
    assert answer["break_glass"] is expect.get("break_glass", False)
    overridden = [
        r["restriction_id"] for r in answer["reasons"] if r["code"] == "objection-overridden"
    ]
    assert overridden == ([expect["overridden"]] if "overridden" in expect else [])

    row = _audit_row(scenario_service, answer["decision_id"])
    context = request.get("context", {})
    assert (row.decision, row.reason) == (expect["decision"], expect["reason"])
    assert (row.requester, row.holder, row.person_id) == (
        request["requester"],
        request["holder"],
        request["subject"]["id"],
    )
    assert (row.field, row.purpose) == (request["field"], request["purpose"])
    assert row.agreement_id == reason["agreement_id"]
    assert row.restriction_id == (overridden[0] if overridden else reason["restriction_id"])
    assert row.break_glass is answer["break_glass"]
    assert row.justification == (context.get("justification") if context.get("emergency") else None)
    assert row.policy_revision == answer["policy_revision"]
    assert row.client == scenario_service.server.client_id
    assert (row.user_ref, row.case_ref) == (context.get("user"), context.get("case_ref"))


def test_unknown_names_are_named_in_the_problem(scenario_service: ScenarioService) -> None:
    by_name = {case["name"]: case["request"] for case in CASES}
    expected_names = {
        "an unknown field is refused, not denied": ("field", "criminal.shoe-size"),
        "an unknown purpose is refused": ("purpose", "marketing"),
        "an unknown agency is refused": ("requester", "la.preston.childrens-services"),
        "an emergency with no justification is refused": ("context", "justification"),
    }
    for case_name, (part, text) in expected_names.items():
        response = scenario_service.server.post("/v1/decisions", json=_body(by_name[case_name]))
        problem = response.json()
        assert response.status_code == 422
        assert problem["invalid_params"][0]["name"] == part
        assert text in problem["detail"]


@pytest.mark.parametrize("batch", BATCHES, ids=[batch["name"] for batch in BATCHES])
def test_scenario_batch(scenario_service: ScenarioService, batch: dict[str, Any]) -> None:
    response = scenario_service.server.post(
        "/v1/decisions/batch",
        json=_body(batch["request"]),
        headers={"x-request-id": "scenario-batch-1"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer["permitted"]) == set(batch["expect"]["permitted"])
    assert len(answer["permitted"]) == len(batch["expect"]["permitted"])

    with Session(scenario_service.engine) as session:
        rows = session.scalars(
            select(AuditDecision).where(AuditDecision.request_id == "scenario-batch-1")
        ).all()
    by_id = {row.decision_id: row for row in rows}
    assert len(rows) == len(answer["decisions"])
    for decision in answer["decisions"]:
        row = by_id[decision["decision_id"]]
        assert (row.field, row.decision) == (decision["field"], decision["decision"])


def test_an_overridden_objection_is_shown_to_its_reviewers(
    scenario_service: ScenarioService,
) -> None:
    case = next(c for c in CASES if "overridden" in c["expect"])
    server = scenario_service.server
    answer = server.post("/v1/decisions", json=_body(case["request"])).json()
    objection = case["expect"]["overridden"]

    queue = server.get("/v1/audit/break-glass").json()
    entry = next(e for e in queue if e["decision"]["decision_id"] == answer["decision_id"])
    assert entry["decision"]["objection_overridden"] == objection

    person = case["request"]["subject"]["id"]
    report = server.get(f"/v1/audit/subject-access/{person}").json()
    items = {item["decision_id"]: item for group in report["groups"] for item in group["items"]}
    assert items[answer["decision_id"]]["objection_overridden"] == objection
    denied = [item for item in items.values() if item["decision"] == "deny"]
    assert all(item["objection_overridden"] is None for item in denied)
