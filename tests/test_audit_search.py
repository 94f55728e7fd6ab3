"""Searching the audit trail (GET /v1/audit/decisions) through a real server.

Every expectation is computed from the decisions this module made, never
from hard-coded counts.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import ScenarioService, all_pages

# (requester, holder, field, purpose, age): a mix of permits and denials.
CHILDREN, ADULTS = "la.blackpool.childrens-services", "la.blackpool.adult-services"
REQUESTS = [
    (CHILDREN, "police.lancashire", "criminal.convictions", "safeguarding.children", 12),
    (CHILDREN, "nhs.lancashire-mental-health", "health.mental", "safeguarding.children", 80),
    (ADULTS, "nhs.blackpool-hospitals", "health.mental", "safeguarding.adults", 80),
    (ADULTS, "edu.blackpool-schools", "education.attendance", "safeguarding.adults", 45),
    ("la.blackpool.early-help", "edu.blackpool-schools", "education.attendance", "early-help", 14),
    ("police.lancashire", "housing.blackpool-coastal", "contact.address", "crime-prevention", 30),
    ("police.lancashire", "probation.north-west", "criminal.convictions", "crime-prevention", 30),
]
PERSONS = ["P-AUD-1", "P-AUD-2", "P-AUD-3", "P-AUD-4"]


@dataclass(frozen=True)
class Sent:
    decision_id: str
    requester: str
    holder: str
    person: str
    purpose: str
    decision: str
    decided_at: datetime


@dataclass
class Trail:
    """The server, and every decision this module has made on it."""

    api: httpx.Client
    service: ScenarioService
    sent: list[Sent]

    def decide(
        self, requester: str, holder: str, field: str, purpose: str, age: int, person: str
    ) -> Sent:
        body = {
            "requester": requester,
            "holder": holder,
            "subject": {"id": person, "attributes": {"age": age}},
            "field": field,
            "purpose": purpose,
        }
        response = self.api.post("/v1/decisions", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        sent = Sent(
            answer["decision_id"],
            requester,
            holder,
            person,
            purpose,
            answer["decision"],
            datetime.fromisoformat(answer["decided_at"]),
        )
        self.sent.append(sent)
        return sent

    def search(self, **params: Any) -> list[dict[str, Any]]:
        """Every page of a search, 7 rows a page (so many pages), followed to the end."""
        return all_pages(self.api, params, limit=7)


@pytest.fixture(scope="module")
def trail(scenario_service: ScenarioService) -> Iterator[Trail]:
    with scenario_service.server.client() as api:
        trail = Trail(api, scenario_service, [])
        for person, request in itertools.product(PERSONS, REQUESTS):
            trail.decide(*request, person=person)
        yield trail


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["decision_id"] for row in rows]


def expected(trail: Trail, keep: Callable[[Sent], bool]) -> set[str]:
    return {sent.decision_id for sent in trail.sent if keep(sent)}


def test_the_trail_has_permits_and_denials(trail: Trail) -> None:
    assert {sent.decision for sent in trail.sent} == {"permit", "deny"}
    assert len(trail.search()) == len(trail.sent)


@pytest.mark.parametrize(
    ("param", "attribute"),
    [
        ("person", "person"),
        ("requester", "requester"),
        ("holder", "holder"),
        ("purpose", "purpose"),
        ("decision", "decision"),
    ],
)
def test_each_filter_returns_exactly_the_matching_rows(
    trail: Trail, param: str, attribute: str
) -> None:
    values = sorted({getattr(sent, attribute) for sent in trail.sent})
    assert len(values) > 1
    for value in values:
        found = trail.search(**{param: value})
        assert len(ids(found)) == len(set(ids(found)))
        matching = {sent.decision_id for sent in trail.sent if getattr(sent, attribute) == value}
        assert set(ids(found)) == matching
        column = "person_id" if attribute == "person" else attribute
        assert {row[column] for row in found} == {value}


def test_filters_combine(trail: Trail) -> None:
    found = trail.search(person="P-AUD-2", holder="edu.blackpool-schools", decision="deny")
    assert set(ids(found)) == expected(
        trail,
        lambda s: (s.person, s.holder, s.decision) == ("P-AUD-2", "edu.blackpool-schools", "deny"),
    )
    assert found


def test_a_time_range_is_from_inclusive_to_exclusive(trail: Trail) -> None:
    ordered = sorted(trail.sent[: len(REQUESTS) * len(PERSONS)], key=lambda s: s.decided_at)
    start, end = ordered[5].decided_at, ordered[20].decided_at
    found = trail.search(**{"from": start.isoformat(), "to": end.isoformat()})
    assert set(ids(found)) == expected(trail, lambda s: start <= s.decided_at < end)
    assert ordered[5].decision_id in ids(found)
    assert ordered[20].decision_id not in ids(found)

    # The same instants written in another zone select the same rows.
    bst = timezone(timedelta(hours=1))
    shifted = trail.search(
        **{"from": start.astimezone(bst).isoformat(), "to": end.astimezone(bst).isoformat()}
    )
    assert ids(shifted) == ids(found)


def test_pages_visit_every_row_once_newest_first_while_decisions_arrive(trail: Trail) -> None:
    with Session(trail.service.engine) as session:
        at_start = list(session.scalars(select(AuditDecision.decision_id)))
    seen: list[dict[str, Any]] = []
    cursor = None
    for page_number in itertools.count():
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        response = trail.api.get("/v1/audit/decisions", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 4
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # New decisions between pages must not shift the pages still to come.
        trail.decide(*REQUESTS[page_number % len(REQUESTS)], person="P-AUD-NEW")
    assert len(ids(seen)) == len(set(ids(seen))), "a row was returned twice"
    assert set(ids(seen)) == set(at_start), "a row was skipped (or a new one crept in)"
    sequence = [row["seq"] for row in seen]
    assert sequence == sorted(sequence, reverse=True)
    moments = [datetime.fromisoformat(row["decided_at"]) for row in seen]
    assert moments == sorted(moments, reverse=True)

    newest = trail.api.get("/v1/audit/decisions", params={"limit": 1}).json()["items"][0]
    assert newest["decision_id"] == trail.sent[-1].decision_id


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"seq:abc").decode(),
        base64.urlsafe_b64encode(b"offset:10").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        "x" * 65,
        pytest.param(base64.urlsafe_b64encode(b"seq:" + b"9" * 25).decode(), id="seq-too-big"),
    ],
)
def test_a_malformed_cursor_is_refused(trail: Trail, cursor: str) -> None:
    response = trail.service.server.get("/v1/audit/decisions", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "cursor" in response.json()["detail"]


def test_one_decision_by_id(trail: Trail) -> None:
    sent = trail.sent[3]
    response = trail.api.get(f"/v1/audit/decisions/{sent.decision_id}")
    assert response.status_code == 200, response.text
    row = response.json()
    assert (row["decision_id"], row["person_id"], row["requester"], row["holder"]) == (
        sent.decision_id,
        sent.person,
        sent.requester,
        sent.holder,
    )
    assert (row["purpose"], row["decision"]) == (sent.purpose, sent.decision)
    assert datetime.fromisoformat(row["decided_at"]) == sent.decided_at

    missing = trail.api.get(f"/v1/audit/decisions/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("person", "P-AUD-1' OR '1'='1"),
        ("person", "P-AUD-1'--"),
        ("requester", "police.lancashire' OR 1=1 --"),
        ("holder", 'x" OR ""="'),
        ("purpose", "early-help); DROP TABLE audit_decisions; --"),
        ("decision", "permit' OR 'a'='a"),
    ],
)
def test_injection_looking_filters_find_nothing(trail: Trail, param: str, value: str) -> None:
    response = trail.api.get("/v1/audit/decisions", params={param: value})
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.json()["items"] == []
    else:
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
    assert len(trail.search()) == len(trail.sent)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_at_the_edge_of_the_calendar_is_not_a_crash(trail: Trail, moment: str) -> None:
    response = trail.service.server.get("/v1/audit/decisions", params={"from": moment})
    assert response.status_code in (200, 422), response.text


def _decide_with_context(trail: Trail, person: str, context: dict[str, Any]) -> dict[str, Any]:
    requester, holder, field, purpose, age = REQUESTS[0]
    body = {
        "requester": requester,
        "holder": holder,
        "subject": {"id": person, "attributes": {"age": age}},
        "field": field,
        "purpose": purpose,
        "context": context,
    }
    response = trail.api.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    decided_at = datetime.fromisoformat(answer["decided_at"])
    trail.sent.append(
        Sent(
            answer["decision_id"],
            requester,
            holder,
            person,
            purpose,
            answer["decision"],
            decided_at,
        )
    )
    return answer


FORMULAS = [
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|'/c calc'!A1",
    "@SUM(1+1)",
    "-2+3",
    "\t=1",
]


def test_the_csv_export_neutralises_formulas_and_ndjson_keeps_them(trail: Trail) -> None:
    """`user` and `case_ref` are any partner's text; a spreadsheet must not run them."""
    for formula in FORMULAS:
        _decide_with_context(trail, "P-AUD-CSV", {"user": formula, "case_ref": formula})
    params = {"person": "P-AUD-CSV"}
    exported = trail.api.get("/v1/audit/decisions/export", params={**params, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(row["user_ref"] for row in rows) == sorted("'" + f for f in FORMULAS)
    assert sorted(row["case_ref"] for row in rows) == sorted("'" + f for f in FORMULAS)
    lines = trail.api.get("/v1/audit/decisions/export", params={**params, "format": "ndjson"})
    verbatim = [json.loads(line) for line in lines.text.splitlines()]
    assert sorted(row["user_ref"] for row in verbatim) == sorted(FORMULAS)


def test_subject_access_for_a_person_id_with_a_slash(trail: Trail) -> None:
    answer = _decide_with_context(trail, "P/AUD/1", {})
    response = trail.api.get("/v1/audit/subject-access/P%2FAUD%2F1")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["person_id"], report["decisions"]) == ("P/AUD/1", 1)
    assert report["groups"][0]["decisions"] == 1
    assert trail.api.get(f"/v1/audit/decisions/{answer['decision_id']}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/audit/decisions",
        "/v1/audit/decisions/export",
        "/v1/audit/subject-access/P-AUD-1",
        "/v1/audit/break-glass",
    ],
)
def test_an_unknown_query_parameter_is_named_not_ignored(trail: Trail, path: str) -> None:
    """`?pending=false` ignored would answer a different question than the one asked."""
    response = trail.api.get(path, params={"pending": "false", "feild": "health"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    named = {param["name"] for param in response.json()["invalid_params"]}
    assert named == {"pending", "feild"}
    assert "is not a parameter of this route" in response.json()["detail"]


@pytest.mark.parametrize(
    ("param", "value", "what"),
    [
        ("field", "health.mentall", "a field"),
        ("purpose", "safeguarding.kids", "a purpose"),
        ("requester", "police.lancs", "an agency"),
        ("holder", "nhs.nowhere", "an agency"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/audit/decisions", "/v1/audit/decisions/export"])
def test_a_name_not_in_the_vocabulary_is_refused_not_an_empty_answer(
    trail: Trail, path: str, param: str, value: str, what: str
) -> None:
    response = trail.api.get(path, params={param: value})
    assert response.status_code == 422, response.text
    [problem] = response.json()["invalid_params"]
    assert problem == {"name": param, "reason": f"'{value}' is not {what} in the vocabulary"}
    # the same names spelt right are answered
    assert trail.api.get("/v1/audit/decisions", params={"field": "health.mental"}).is_success
