"""Bad and oversized input through a real server with small limits.

Every refusal is a problem+json with a `detail`, never a 5xx, and leaves no
audit row; birth dates give the age that a grant's conditions test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditDecision
from tests.conftest import Backend, import_agreements_from, scenario_env, start_in_process

MAX_BODY_BYTES = 4096
MAX_BATCH_FIELDS = 5
CHILD = {
    "requester": "la.blackpool.childrens-services",
    "holder": "nhs.lancashire-mental-health",
    "subject": {"id": "P-LIM-1", "attributes": {"age": 12}},
    "field": "health.mental",
    "purpose": "safeguarding.children",
}
FIVE_FIELDS = [
    "identity.name",
    "identity.date-of-birth",
    "contact.address",
    "contact.phone",
    "health.mental",
]
BATCH = {**{k: v for k, v in CHILD.items() if k != "field"}, "fields": ["identity.name"]}


@dataclass
class Limited:
    api: httpx.Client
    engine: Engine

    def audit_rows(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)


@pytest.fixture(scope="module")
def limited(backend: Backend) -> Iterator[Limited]:
    url = backend.new_database()
    upgrade_schema(url)
    env = {
        **scenario_env(url),
        "ACCORD_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "ACCORD_MAX_BATCH_FIELDS": str(MAX_BATCH_FIELDS),
    }
    import_agreements_from(env)
    server = start_in_process(env)
    engine = make_engine(url)
    try:
        with server.client() as api:
            yield Limited(api, engine)
    finally:
        server.stop()
        engine.dispose()


def refused(limited: Limited, response: httpx.Response, status: int) -> dict[str, Any]:
    """Check a refusal: its status and a problem+json body with a `detail`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"]
    return problem


def names(problem: dict[str, Any]) -> list[str]:
    return [param["name"] for param in problem.get("invalid_params", [])]


def with_context(justification: str) -> dict[str, Any]:
    return {**CHILD, "context": {"emergency": True, "justification": justification}}


def test_a_body_just_under_the_limit_is_decided(limited: Limited) -> None:
    body = json.dumps(with_context("j" * 1900)).encode()
    assert len(body) < MAX_BODY_BYTES
    response = limited.api.post(
        "/v1/decisions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/register/restrictions"])
def test_an_oversized_body_with_content_length_is_413(limited: Limited, path: str) -> None:
    before = limited.audit_rows()
    body = json.dumps({**with_context("j" * 1900), "padding": "x" * MAX_BODY_BYTES}).encode()
    response = limited.api.post(path, content=body, headers={"content-type": "application/json"})
    refused(limited, response, 413)
    assert limited.audit_rows() == before


def test_an_oversized_chunked_body_is_413(limited: Limited) -> None:
    before = limited.audit_rows()
    body = json.dumps({**with_context("j" * 1900), "padding": "x" * MAX_BODY_BYTES}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    response = limited.api.post(
        "/v1/decisions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    refused(limited, response, 413)
    assert limited.audit_rows() == before


def test_malformed_json_is_422(limited: Limited) -> None:
    for text in ['{"requester": ', "not json", "[1, 2", ""]:
        response = limited.api.post(
            "/v1/decisions", content=text, headers={"content-type": "application/json"}
        )
        refused(limited, response, 422)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({**CHILD, "colour": "red"}, "colour"),
        ({**CHILD, "subject": {"id": "P-1", "attributes": {"height": 120}}}, "height"),
        ({**CHILD, "context": {"urgent": True}}, "urgent"),
        ({**BATCH, "field": "identity.name"}, "field"),
    ],
)
def test_an_unknown_key_is_refused_and_named(limited: Limited, body: Any, key: str) -> None:
    path = "/v1/decisions/batch" if "fields" in body else "/v1/decisions"
    problem = refused(limited, limited.api.post(path, json=body), 422)
    assert any(name.split(".")[-1] == key for name in names(problem)), problem
    assert key in problem["detail"]


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({**CHILD, "subject": {"id": "P" * 129}}, "subject.id"),
        (with_context("j" * 3000), "context.justification"),
        ({**CHILD, "context": {"user": "u" * 129}}, "context.user"),
        ({**CHILD, "field": "health." + "m" * 130}, "field"),
    ],
)
def test_an_over_long_string_is_422(limited: Limited, body: Any, name: str) -> None:
    body_bytes = json.dumps(body).encode()
    assert len(body_bytes) < MAX_BODY_BYTES, "must be refused for its length, not its size"
    problem = refused(limited, limited.api.post("/v1/decisions", json=body), 422)
    assert name in names(problem)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([*FIVE_FIELDS, "education.attendance"], "more than the limit"),
        (["identity.name", "contact.phone", "identity.name"], "listed twice"),
        ([], "empty"),
    ],
)
def test_a_bad_field_list_is_refused_naming_fields(
    limited: Limited, fields: list[str], why: str
) -> None:
    before = limited.audit_rows()
    response = limited.api.post("/v1/decisions/batch", json={**BATCH, "fields": fields})
    problem = refused(limited, response, 422)
    assert "fields" in problem["detail"], why
    assert limited.audit_rows() == before
    assert "fields" in names(problem), why


def test_a_batch_at_the_limit_is_decided(limited: Limited) -> None:
    fields = FIVE_FIELDS
    assert len(fields) == MAX_BATCH_FIELDS
    response = limited.api.post("/v1/decisions/batch", json={**BATCH, "fields": fields})
    assert response.status_code == 200, response.text
    assert [d["field"] for d in response.json()["decisions"]] == fields


@pytest.mark.parametrize(
    "attributes",
    [
        {"age": -1},
        {"age": 151},
        {"age": "twelve"},
        {"age": "12"},  # a string is not an integer
        {"age": True},  # a boolean is not an age (it was taken as 1)
        {"age": 12.0},
        {"birth_date": "2013-02-30"},
        {"age": 12, "birth_date": "2013-01-01"},
    ],
)
def test_bad_person_attributes_are_422(limited: Limited, attributes: dict[str, Any]) -> None:
    body = {**CHILD, "subject": {"id": "P-LIM-2", "attributes": attributes}}
    problem = refused(limited, limited.api.post("/v1/decisions", json=body), 422)
    assert any(name.startswith("subject.attributes") for name in names(problem)), problem


def born_years_ago(years: int) -> str:
    today = datetime.now(UTC).date()
    return date(today.year - years, 1, 1).isoformat()  # a birthday already passed this year


@pytest.mark.parametrize(
    ("years", "decision", "reason"),
    [(12, "permit", "agreement"), (80, "deny", "subject-condition-not-met")],
)
def test_a_birth_date_gives_the_age_conditions_test(
    limited: Limited, years: int, decision: str, reason: str
) -> None:
    body = {
        **CHILD,
        "subject": {"id": "P-LIM-3", "attributes": {"birth_date": born_years_ago(years)}},
    }
    response = limited.api.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["decision"], answer["reasons"][0]["code"]) == (decision, reason)
    if decision == "permit":
        assert answer["reasons"][0]["agreement_id"] == "isa-blackpool-mash"


def test_wrong_methods_and_media_types_are_problems_not_crashes(limited: Limited) -> None:
    post = limited.api.post
    as_json = {"content-type": "application/json"}
    checks = [
        limited.api.get("/v1/decisions"),
        post("/v1/decisions", content=b"\xff\xfe\x00", headers=as_json),
        post("/v1/decisions", content=b"1e999999", headers=as_json),
        post("/v1/decisions", content=b"requester=x", headers={"content-type": "text/plain"}),
        post("/v1/decisions", json=[CHILD]),
        post("/v1/decisions", json={**CHILD, "subject": None}),
    ]
    for response in checks:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]


def test_a_string_is_not_a_boolean(limited: Limited) -> None:
    for emergency in ("yes", "true", 1):
        context = {"emergency": emergency, "justification": "a child at risk"}
        problem = refused(
            limited, limited.api.post("/v1/decisions", json={**CHILD, "context": context}), 422
        )
        assert "context.emergency" in names(problem), problem


@pytest.mark.parametrize(
    ("context", "name"),
    [
        ({"user": "u\u0000"}, "context.user"),
        ({"case_ref": "x\u0000"}, "context.case_ref"),
        ({"emergency": True, "justification": "a child at risk \u0000"}, "context.justification"),
        ({"user": "\ud800"}, "context.user"),  # an unpaired surrogate: not UTF-8
    ],
)
def test_text_a_database_cannot_store_is_refused_before_it_is_recorded(
    limited: Limited, context: dict[str, Any], name: str
) -> None:
    """On PostgreSQL a NUL in one row failed its whole group commit, other callers' too."""
    before = limited.audit_rows()
    body = json.dumps({**CHILD, "context": context})  # sent as JSON escapes, as a partner may
    response = limited.api.post(
        "/v1/decisions", content=body, headers={"content-type": "application/json"}
    )
    problem = refused(limited, response, 422)
    assert name in names(problem), problem
    assert limited.audit_rows() == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/clients",
            {
                "id": "c-nul",
                "name": "a\u0000",
                "scopes": ["audit"],
                "agencies": ["police.lancashire"],
            },
        ),
        (
            "/v1/register/restrictions",
            {"person": "P-1", "kind": "objection", "reason": "asked \u0000 us"},
        ),
    ],
)
def test_nul_in_other_writes_is_refused_naming_the_field(
    limited: Limited, path: str, body: dict[str, Any]
) -> None:
    response = limited.api.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    problem = refused(limited, response, 422)
    assert {"name", "reason"} & set(names(problem)), problem


@pytest.mark.parametrize(
    "query", ["user=%00", "case_ref=a%00b", "to=0.5", "from=1733011200", "from=2026-12-01"]
)
def test_a_bad_audit_search_is_422_not_a_crash(limited: Limited, query: str) -> None:
    for path in ("/v1/audit/decisions", "/v1/audit/decisions/export"):
        problem = refused(limited, limited.api.get(f"{path}?{query}"), 422)
        assert query.split("=")[0] in names(problem), problem


def test_an_rfc_3339_time_range_is_taken(limited: Limited) -> None:
    response = limited.api.get(
        "/v1/audit/decisions?from=2026-01-01T00:00:00Z&to=2099-01-01T00:00:00%2B01:00"
    )
    assert response.status_code == 200, response.text


def test_a_405_lists_every_method_the_path_takes(limited: Limited) -> None:
    response = limited.api.delete("/v1/clients")
    refused(limited, response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
