"""The auditor's side end to end: thousands of decisions made through the API, then every
filter, paging under concurrent inserts, both exports, subject access (API and console),
break-glass review with the overdue flag, tamper evidence and purge behind a checkpoint.

Expectations are computed from what the decision API answered, never hard-coded.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.audit.integrity import Purge, purge_before, verify_chain
from app.errors import InvalidRequest
from app.runtime.clock import FixedClock
from app.store.tables import AuditCheckpoint, AuditDecision
from tests.audit_rows import write_rows
from tests.conftest import (
    AUDIT_SIGNER,
    Backend,
    ScenarioService,
    Server,
    ServerFactory,
    accord,
    all_pages,
    create_key,
    import_agreements_from,
    scenario_env,
    start_server,
)

CHILDREN = "la.blackpool.childrens-services"
ADULTS = "la.blackpool.adult-services"
EARLY_HELP = "la.blackpool.early-help"
POLICE, PROBATION = "police.lancashire", "probation.north-west"
MENTAL_HEALTH, HOSPITALS = "nhs.lancashire-mental-health", "nhs.blackpool-hospitals"
SCHOOLS, HOUSING = "edu.blackpool-schools", "housing.blackpool-coastal"

# (requester, holder, purpose, age): permits and every kind of denial.
TEMPLATES = [
    (CHILDREN, POLICE, "safeguarding.children", 12),
    (CHILDREN, MENTAL_HEALTH, "safeguarding.children", 15),
    (CHILDREN, HOSPITALS, "safeguarding", 9),  # a parent purpose: purpose-not-covered
    (ADULTS, POLICE, "safeguarding.adults", 40),
    (ADULTS, HOSPITALS, "safeguarding.adults", 80),
    (ADULTS, SCHOOLS, "safeguarding.adults", 45),  # no-agreement
    (EARLY_HELP, SCHOOLS, "early-help", 14),  # consent-required (P-301 has consent)
    (EARLY_HELP, HOUSING, "early-help.transience", 14),
    (POLICE, PROBATION, "crime-prevention", 30),  # agreement-not-in-force
]
SOME_FIELDS = [
    "identity.name",
    "contact.address",
    "health.mental",
    "health.physical",
    "criminal.convictions",
    "education.attendance",
    "housing.tenancy",
]
FIELD_SETS: list[Any] = ["*", "*", SOME_FIELDS]
PERSONS = [f"P-TR-{n:02d}" for n in range(12)] + ["P-301"]
USERS = ["sw.ahmed", "sw.brown", "dc.clarke", None]
CASES = ["MASH-2026-0101", "MASH-2026-0102", "MASH-2026-0103", "ASC-77", None]
BATCH_CALLS = 135
# Emergencies from the shared scenario: an objection overridden, and a field no grant covers.
EMERGENCIES = [
    (ADULTS, MENTAL_HEALTH, "P-201", 34, "safeguarding.adults", "sw.ahmed", "ASC-77",
     ["health.mental", "health.physical", "identity.name", "contact.address"],
     "Credible threat of suicide reported by GP this morning"),
    (CHILDREN, HOSPITALS, "P-101", 12, "safeguarding.children", "sw.brown", "MASH-2026-0101",
     ["health.sexual", "health.physical", "criminal.intelligence"],
     "Disclosure of abuse at school today, child at immediate risk"),
    (ADULTS, MENTAL_HEALTH, "P-201", 34, "safeguarding.adults", "dc.clarke", None,
     ["health.substance-misuse"],
     "Found unconscious at home, paramedics need medication history"),
]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One audit row as the decision API described it."""

    decision_id: str
    client: str
    user: str | None
    case_ref: str | None
    requester: str
    holder: str
    person: str
    field: str
    purpose: str
    decision: str
    reason: str
    agreement: str | None
    break_glass: bool
    justification: str | None
    decided_at: datetime


@dataclass
class Caller:
    client_id: str
    api: httpx.Client
    agencies: frozenset[str] | None  # None: may decide for any agency


def decide_batch(
    caller: Caller,
    *,
    requester: str,
    holder: str,
    person: str,
    age: int,
    purpose: str,
    fields: Any,
    user: str | None = None,
    case_ref: str | None = None,
    justification: str | None = None,
) -> list[Row]:
    context: dict[str, Any] = {"user": user, "case_ref": case_ref}
    if justification is not None:
        context |= {"emergency": True, "justification": justification}
    body = {
        "requester": requester,
        "holder": holder,
        "subject": {"id": person, "attributes": {"age": age}},
        "fields": fields,
        "purpose": purpose,
        "context": {k: v for k, v in context.items() if v is not None},
    }
    response = caller.api.post("/v1/decisions/batch", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    return [
        Row(
            decision_id=d["decision_id"],
            client=caller.client_id,
            user=user,
            case_ref=case_ref,
            requester=requester,
            holder=holder,
            person=person,
            field=d["field"],
            purpose=purpose,
            decision=d["decision"],
            reason=d["reasons"][0]["code"],
            agreement=d["reasons"][0]["agreement_id"],
            break_glass=d["break_glass"],
            justification=justification,
            decided_at=datetime.fromisoformat(d["decided_at"]),
        )
        for d in answer["decisions"]
    ]


@dataclass
class Trail:
    service: ScenarioService
    admin: Caller
    local_authority: Caller
    rows: list[Row]

    @property
    def server(self) -> Server:
        return self.service.server

    @property
    def api(self) -> httpx.Client:
        return self.admin.api

    def search(self, **params: Any) -> list[dict[str, Any]]:
        """Every page of a search (500 rows a page), newest first, followed to the end."""
        return all_pages(self.api, params, limit=500)


def _wait_for_key(server: Server, key: str) -> None:
    """A key made by the CLI reaches the server with the next policy revision."""
    deadline = time.monotonic() + 10
    while server.get("/metrics", key=key).status_code != 200:
        assert time.monotonic() < deadline, "the new client's key never became valid"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def trail(scenario_service: ScenarioService) -> Iterator[Trail]:
    server = scenario_service.server
    local_key = create_key(
        scenario_env(scenario_service.database_url),
        "trail-local-authority",
        scopes="decide",
        agencies=f"{CHILDREN},{ADULTS},{EARLY_HELP}",
    )
    _wait_for_key(server, local_key)
    with (
        server.client() as admin_api,
        server.client(key=local_key, timeout=30) as local_api,
    ):
        admin = Caller(server.client_id, admin_api, None)
        local = Caller(
            "trail-local-authority", local_api, frozenset({CHILDREN, ADULTS, EARLY_HELP})
        )

        def call(i: int) -> list[Row]:
            requester, holder, purpose, age = TEMPLATES[i % len(TEMPLATES)]
            caller = local if i % 2 and requester in (local.agencies or ()) else admin
            return decide_batch(
                caller,
                requester=requester,
                holder=holder,
                person=PERSONS[i % len(PERSONS)],
                age=age,
                purpose=purpose,
                fields=FIELD_SETS[(i // len(TEMPLATES)) % len(FIELD_SETS)],
                user=USERS[i % len(USERS)],
                case_ref=CASES[i % len(CASES)],
            )

        rows: list[Row] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for batch in pool.map(call, range(BATCH_CALLS)):
                rows += batch
        for requester, holder, person, age, purpose, user, case, fields, why in EMERGENCIES:
            rows += decide_batch(
                local,
                requester=requester,
                holder=holder,
                person=person,
                age=age,
                purpose=purpose,
                fields=fields,
                user=user,
                case_ref=case,
                justification=why,
            )
        yield Trail(scenario_service, admin, local, rows)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["decision_id"] for item in items]


def expected(trail: Trail, keep: Callable[[Row], bool]) -> set[str]:
    return {row.decision_id for row in trail.rows if keep(row)}


def under(name: str) -> Callable[[str], bool]:
    return lambda value: value == name or value.startswith(name + ".")


# 1. Thousands of decisions, and each filter the search tests do not cover.


def test_thousands_of_decisions_of_every_kind_are_recorded(trail: Trail) -> None:
    assert len(trail.rows) >= 2000
    assert len(trail.search()) == len(trail.rows)
    reasons = {row.reason for row in trail.rows}
    assert {"agreement", "break-glass", "purpose-not-covered", "field-not-covered"} <= reasons
    assert {"no-agreement", "agreement-not-in-force", "consent-required"} <= reasons
    assert len([row for row in trail.rows if row.break_glass]) >= 4
    assert {row.client for row in trail.rows} == {trail.admin.client_id, "trail-local-authority"}


@pytest.mark.parametrize(
    ("param", "attribute", "column"),
    [
        ("client", "client", "client"),
        ("user", "user", "user_ref"),
        ("case_ref", "case_ref", "case_ref"),
        ("reason", "reason", "reason"),
        ("agreement", "agreement", "agreement_id"),
        ("break_glass", "break_glass", "break_glass"),
    ],
)
def test_each_exact_filter_returns_exactly_the_matching_rows(
    trail: Trail, param: str, attribute: str, column: str
) -> None:
    values = {getattr(row, attribute) for row in trail.rows} - {None}
    assert len(values) > 1, f"the trail needs several values of {attribute}"
    for value in sorted(values, key=str):
        query = str(value).lower() if isinstance(value, bool) else value
        found = trail.search(**{param: query})
        assert len(ids(found)) == len(set(ids(found)))
        matching = {row.decision_id for row in trail.rows if getattr(row, attribute) == value}
        assert set(ids(found)) == matching
        assert {item[column] for item in found} == {value}


@pytest.mark.parametrize("field", ["health", "identity", "criminal", "health.mental"])
def test_a_field_filter_includes_the_fields_under_it(trail: Trail, field: str) -> None:
    found = trail.search(field=field)
    assert set(ids(found)) == expected(trail, lambda r: under(field)(r.field))
    assert all(under(field)(item["field"]) for item in found)
    if "." not in field:
        assert len({item["field"] for item in found}) > 1, "no descendant was found"


@pytest.mark.parametrize(
    ("purpose", "purposes"),
    [
        ("safeguarding", {"safeguarding", "safeguarding.children", "safeguarding.adults"}),
        ("safeguarding.children", {"safeguarding.children"}),
        ("early-help", {"early-help", "early-help.transience"}),
    ],
)
def test_a_purpose_filter_includes_the_purposes_under_it(
    trail: Trail, purpose: str, purposes: set[str]
) -> None:
    found = trail.search(purpose=purpose)
    assert set(ids(found)) == expected(trail, lambda r: r.purpose in purposes)
    assert {item["purpose"] for item in found} == purposes


def test_the_new_filters_combine(trail: Trail) -> None:
    def keep(row: Row) -> bool:
        return (
            under("health")(row.field)
            and under("safeguarding")(row.purpose)
            and row.client == "trail-local-authority"
            and row.user == "sw.ahmed"
            and row.decision == "permit"
        )

    found = trail.search(
        field="health",
        purpose="safeguarding",
        client="trail-local-authority",
        user="sw.ahmed",
        decision="permit",
    )
    assert found
    assert set(ids(found)) == expected(trail, keep)


# 2. Paging while decisions keep arriving.


def test_paging_while_another_thread_keeps_deciding(trail: Trail) -> None:
    made: list[Row] = []
    stop = threading.Event()

    def keep_deciding() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            made.extend(
                decide_batch(
                    trail.local_authority,
                    requester=CHILDREN,
                    holder=POLICE,
                    person=f"P-LIVE-{n % 3}",
                    age=12,
                    purpose="safeguarding.children",
                    fields=["identity.name", "criminal.convictions", "health.sexual"],
                )
            )

    engine = trail.service.engine
    thread = threading.Thread(target=keep_deciding, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(made) < 6:  # inserts are under way before paging begins
            assert thread.is_alive() and time.monotonic() < deadline, "the deciding thread failed"
            time.sleep(0.01)
        with engine.connect() as connection:
            at_start = set(connection.scalars(select(AuditDecision.decision_id)))
        made_before = len(made)
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            response = trail.api.get("/v1/audit/decisions", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 50
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        made_while_paging = len(made) - made_before
    finally:
        stop.set()
        thread.join(timeout=30)
        trail.rows.extend(made)
    assert not thread.is_alive()
    assert made_while_paging > 0, "no decision was made while paging"
    assert len(ids(seen)) == len(set(ids(seen))), "a row was returned twice"
    assert at_start <= set(ids(seen)), "a row that existed when paging began was skipped"
    assert set(ids(seen)) <= {row.decision_id for row in trail.rows}
    sequence = [item["seq"] for item in seen]
    assert sequence == sorted(sequence, reverse=True)


# 3. Export.


@pytest.fixture(scope="module")
def http_api(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A real `accord serve` on the trail's database: the exports' chunked transfer
    encoding is the HTTP server's."""
    env = scenario_env(trail.service.database_url)
    server = start_server(env, tmp_path_factory.mktemp("export"))
    try:
        with server.client() as api:
            yield api
    finally:
        server.stop()


def _as_csv(value: Any) -> str:
    """A JSON value as the CSV export writes it (obligations as `field=mask;...`)."""
    if isinstance(value, list):
        return ";".join(f"{o['field']}={o['mask']}" if isinstance(o, dict) else o for o in value)
    return "" if value is None else str(value)


@pytest.mark.parametrize(
    "params",
    [
        {"purpose": "safeguarding"},  # more rows than one export batch (1000)
        {"break_glass": "true"},
        {"field": "health", "person": "P-201"},
    ],
    ids=["purpose", "break-glass", "field-and-person"],
)
@pytest.mark.slow
def test_both_exports_stream_the_same_rows_as_the_search(
    trail: Trail, http_api: httpx.Client, params: dict[str, str]
) -> None:
    searched = trail.search(**params)
    assert searched
    oldest_first = list(reversed(searched))

    with http_api.stream(
        "GET", "/v1/audit/decisions/export", params={**params, "format": "csv"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "content-length" not in response.headers
        assert response.headers.get("transfer-encoding") == "chunked"
        body = response.read().decode()
    assert body.count("\n") == len(searched) + 1
    reader = csv.reader(io.StringIO(body))
    header = next(reader)
    assert header == list(searched[0])
    lines = list(reader)
    assert len(lines) == len(searched)
    for line, item in zip(lines, oldest_first, strict=True):
        assert dict(zip(header, line, strict=True)) == {k: _as_csv(v) for k, v in item.items()}

    with http_api.stream(
        "GET", "/v1/audit/decisions/export", params={**params, "format": "ndjson"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in response.headers
        assert response.headers.get("transfer-encoding") == "chunked"
        body = response.read().decode()
    exported = [json.loads(line) for line in body.splitlines()]
    assert body.endswith("\n")
    assert exported == oldest_first


# 4. Subject access.


@pytest.mark.parametrize("person", ["P-201", "P-TR-03", "P-301"])
def test_subject_access_groups_every_decision_about_the_person(trail: Trail, person: str) -> None:
    searched = trail.search(person=person)
    assert set(ids(searched)) == expected(trail, lambda r: r.person == person)
    response = trail.api.get(f"/v1/audit/subject-access/{person}")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["person_id"] == person
    assert report["decisions"] == len(searched)

    by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in searched:
        by_group[(item["requester"], item["purpose"])].append(item)
    groups = report["groups"]
    assert [(g["requester"], g["purpose"]) for g in groups] == sorted(by_group)
    assert sum(group["decisions"] for group in groups) == len(searched)
    for group in groups:
        rows = by_group[(group["requester"], group["purpose"])]
        assert group["decisions"] == len(rows) == len(group["items"])
        assert {item["decision_id"] for item in group["items"]} == set(ids(rows))
        assert group["permitted"] == sum(1 for row in rows if row["decision"] == "permit")
        assert group["fields_permitted"] == sorted(
            {row["field"] for row in rows if row["decision"] == "permit"}
        )
        moments = [datetime.fromisoformat(row["decided_at"]) for row in rows]
        assert datetime.fromisoformat(group["first_at"]) == min(moments)
        assert datetime.fromisoformat(group["last_at"]) == max(moments)

    with trail.server.client(key=None, timeout=10, follow_redirects=True) as browser:
        assert browser.get("/console/subject-access", params={"person": person}).url.path == (
            "/console/login"
        )
        login = browser.post("/console/login", data={"key": trail.server.key})
        assert login.status_code == 200
        assert login.url.path == "/console"
        page = browser.get("/console/subject-access", params={"person": person})
    assert page.status_code == 200
    assert page.url.path == "/console/subject-access"
    assert f"Subject access report: {person}" in page.text
    assert f"{len(searched)} decisions about this person" in page.text
    for requester, purpose in by_group:
        assert f"{requester} for {purpose}" in page.text


# 5. Break-glass review.


def _queue(server: Server, status: str = "pending") -> list[dict[str, Any]]:
    response = server.get("/v1/audit/break-glass", params={"status": status})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def _gauges(server: Server) -> tuple[float, float]:
    response = server.get("/metrics")
    assert response.status_code == 200, response.text

    def gauge(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", response.text, re.MULTILINE)
        assert found, f"{name} is not in /metrics"
        return float(found.group(1))

    return (
        gauge("accord_break_glass_reviews_pending"),
        gauge("accord_break_glass_reviews_overdue"),
    )


def test_break_glass_permits_are_queued_reviewed_and_flagged_overdue(
    trail: Trail, server_factory: ServerFactory
) -> None:
    server = trail.server
    permits = [row for row in trail.rows if row.break_glass and row.decision == "permit"]
    assert len(permits) >= 4
    assert all(row.reason == "break-glass" and row.justification for row in permits)

    pending = _queue(server)
    assert {e["decision"]["decision_id"] for e in pending} == {r.decision_id for r in permits}
    seqs = [entry["decision"]["seq"] for entry in pending]
    assert seqs == sorted(seqs), "the queue is oldest first"
    justification = {row.decision_id: row.justification for row in permits}
    for entry in pending:
        assert entry["reviews"] == [] and entry["overdue"] is False
        assert entry["decision"]["break_glass"] is True
        assert entry["decision"]["justification"] == justification[entry["decision"]["decision_id"]]

    first, second = permits[0].decision_id, permits[1].decision_id
    reviewed = {first: "justified", second: "not-justified"}
    for decision_id, outcome in reviewed.items():
        note = f"{outcome}: checked with the team manager"
        response = server.post(
            f"/v1/audit/break-glass/{decision_id}/reviews",
            json={"outcome": outcome, "note": note, "reviewer": "J. Okafor (IG)"},
        )
        assert response.status_code == 201, response.text
        review = response.json()
        assert (review["outcome"], review["note"]) == (outcome, note)
        # accountable to a person, and to the system that sent it
        assert (review["reviewer"], review["client"]) == ("J. Okafor (IG)", server.client_id)
    # A later review adds to the first, it does not replace it.
    again = server.post(
        f"/v1/audit/break-glass/{first}/reviews",
        json={
            "outcome": "not-justified",
            "note": "on second look, no immediate risk",
            "reviewer": "A. Shah (Caldicott guardian)",
        },
    )
    assert again.status_code == 201, again.text

    still_pending = _queue(server)
    assert {e["decision"]["decision_id"] for e in still_pending} == (
        {row.decision_id for row in permits} - set(reviewed)
    )
    everything = {e["decision"]["decision_id"]: e for e in _queue(server, "all")}
    assert set(everything) == {row.decision_id for row in permits}
    assert [r["outcome"] for r in everything[first]["reviews"]] == ["justified", "not-justified"]
    assert [r["reviewer"] for r in everything[first]["reviews"]] == [
        "J. Okafor (IG)",
        "A. Shah (Caldicott guardian)",
    ]
    assert [r["outcome"] for r in everything[second]["reviews"]] == ["not-justified"]
    assert all(
        not everything[row.decision_id]["reviews"]
        for row in permits
        if row.decision_id not in reviewed
    )

    ordinary_permit = next(r for r in trail.rows if r.decision == "permit" and not r.break_glass)
    a_denial = next(r for r in trail.rows if r.decision == "deny")
    for row in (ordinary_permit, a_denial):
        response = server.post(
            f"/v1/audit/break-glass/{row.decision_id}/reviews",
            json={"outcome": "justified", "note": "n/a", "reviewer": "J. Okafor"},
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
    unknown = server.post(
        f"/v1/audit/break-glass/{uuid.uuid4()}/reviews",
        json={"outcome": "justified", "note": "n/a", "reviewer": "J. Okafor"},
    )
    assert unknown.status_code == 404, unknown.text
    for body in (
        {"outcome": "maybe", "note": "n/a", "reviewer": "J. Okafor"},
        {"outcome": "justified", "note": "", "reviewer": "J. Okafor"},
        {"outcome": "justified", "reviewer": "J. Okafor"},
        {"outcome": "justified", "note": "n/a"},  # no one named
        {"outcome": "justified", "note": "n/a", "reviewer": "   "},
    ):
        bad = server.post(f"/v1/audit/break-glass/{permits[2].decision_id}/reviews", json=body)
        assert bad.status_code == 422, bad.text
    assert len(_queue(server)) == len(still_pending), "a refused review changed the queue"

    # Overdue: a replica that allows a second for review, on the same database, on a
    # clock of its own that is then moved past the deadline (no sleeping).
    clock = FixedClock(datetime.now(UTC))
    impatient = server_factory(
        {
            **scenario_env(trail.service.database_url),
            "ACCORD_BREAK_GLASS_REVIEW_DAYS": "0.00001",
        },
        clock=clock,
    )
    newest = max(row.decided_at for row in permits)
    clock.advance(max(timedelta(0), newest + timedelta(seconds=2) - clock.now()))
    overdue_queue = _queue(impatient)
    assert {e["decision"]["decision_id"] for e in overdue_queue} == {
        e["decision"]["decision_id"] for e in still_pending
    }
    assert all(entry["overdue"] is True for entry in overdue_queue)
    assert all(entry["overdue"] is bool(not entry["reviews"]) for entry in _queue(impatient, "all"))
    assert all(entry["overdue"] is False for entry in _queue(server))
    assert _gauges(impatient) == (len(still_pending), len(still_pending))
    assert _gauges(server) == (len(still_pending), 0)


# 6. Tamper evidence (a fresh database of its own).


def _verify_cli(env: dict[str, str]) -> Any:
    return accord("audit", "verify", env=env, check=False)


def _verify_api(server: Server) -> dict[str, Any]:
    response = server.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _execute(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


@pytest.mark.slow
def test_an_edited_or_removed_row_is_named_by_verify(
    backend: Backend,
    database_url: str,
    engine: Engine,
    server_factory: Callable[[dict[str, str]], Server],
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = server_factory(env)
    with server.client() as api:
        admin = Caller(server.client_id, api, None)
        for requester, holder, purpose, age in TEMPLATES[:5]:
            decide_batch(
                admin, requester=requester, holder=holder, person="P-TAMPER", age=age,
                purpose=purpose, fields="*",
            )  # fmt: skip
    with engine.connect() as connection:
        total = int(connection.scalar(select(func.count()).select_from(AuditDecision)) or 0)
        deny = connection.execute(
            select(AuditDecision.seq, AuditDecision.decision_id)
            .where(AuditDecision.decision == "deny", AuditDecision.seq > total // 3)
            .order_by(AuditDecision.seq)
            .limit(1)
        ).one()
    assert total >= 90

    result = _verify_cli(env)
    assert result.returncode == 0, result.stderr
    assert f"intact: {total} rows verified, chain head at row {total}" in result.stdout
    assert _verify_api(server) == {
        "intact": True,
        "rows_checked": total,
        "last_seq": total,
        "broken": None,
        "signed_by": [AUDIT_SIGNER.key_id],
    }

    if backend.name == "postgresql":
        for statement in (
            "UPDATE audit_decisions SET decision = 'permit' WHERE seq = :seq",
            "DELETE FROM audit_decisions WHERE seq = :seq",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                _execute(engine, statement, seq=deny.seq)
        assert _verify_api(server)["intact"] is True
        # A superuser can switch the trigger off; the chain still shows what they did.
        _execute(engine, "ALTER TABLE audit_decisions DISABLE TRIGGER audit_decisions_append_only")

    # A denial rewritten as a permit.
    _execute(
        engine, "UPDATE audit_decisions SET decision = 'permit' WHERE seq = :seq", seq=deny.seq
    )
    result = _verify_cli(env)
    assert result.returncode == 1
    assert f"BROKEN at row {deny.seq} (decision {deny.decision_id})" in result.stderr
    assert "its content was changed" in result.stderr
    report = _verify_api(server)
    assert report["intact"] is False
    assert report["broken"]["seq"] == deny.seq
    assert report["broken"]["decision_id"] == deny.decision_id
    assert report["rows_checked"] == deny.seq - 1

    _execute(engine, "UPDATE audit_decisions SET decision = 'deny' WHERE seq = :seq", seq=deny.seq)
    assert _verify_cli(env).returncode == 0
    assert _verify_api(server)["intact"] is True

    # One row removed from the middle.
    removed = deny.seq + 5
    with engine.connect() as connection:
        saved = dict(
            connection.execute(select(AuditDecision.__table__).where(AuditDecision.seq == removed))
            .mappings()
            .one()
        )
    _execute(engine, "DELETE FROM audit_decisions WHERE seq = :seq", seq=removed)
    result = _verify_cli(env)
    assert result.returncode == 1
    assert f"rows {removed} to {removed} are missing" in result.stderr
    report = _verify_api(server)
    assert report["intact"] is False
    assert report["broken"]["seq"] == removed  # the first missing row
    assert f"rows {removed} to {removed} are missing" in report["broken"]["problem"]
    assert report["rows_checked"] == removed - 1

    with engine.begin() as connection:  # put back exactly as it was: intact again
        connection.execute(insert(AuditDecision), [saved])
    assert _verify_cli(env).returncode == 0

    # The newest rows removed: the chain head still records them.
    _execute(engine, "DELETE FROM audit_decisions WHERE seq > :seq", seq=total - 3)
    result = _verify_cli(env)
    assert result.returncode == 1
    assert f"BROKEN at row {total - 2}" in result.stderr
    assert "rows at the end were removed" in result.stderr
    report = _verify_api(server)
    assert report["intact"] is False
    assert report["broken"]["seq"] == total - 2
    assert report["broken"]["decision_id"] is None
    assert f"head records row {total}" in report["broken"]["problem"]
    assert report["rows_checked"] == total - 3


# 7. Purge behind a checkpoint.


def _years_ago(years: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=365 * years)


def _seqs(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(AuditDecision.seq).order_by(AuditDecision.seq)))


def _checkpoints(engine: Engine) -> list[AuditCheckpoint]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)))


def test_purge_removes_only_a_verified_prefix_behind_a_checkpoint(engine: Engine) -> None:
    moments = (
        [_years_ago(10) + timedelta(minutes=i) for i in range(30)]
        + [_years_ago(8) + timedelta(minutes=i) for i in range(20)]
        + [datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=i) for i in range(10)]
    )
    write_rows(engine, moments)
    with engine.connect() as connection:
        hash_of_30 = connection.scalar(
            select(AuditDecision.row_hash).where(AuditDecision.seq == 30)
        )

    with pytest.raises(InvalidRequest, match="future"):
        purge_before(
            engine, before=datetime.now(UTC) + timedelta(days=1), actor="dpo", signer=AUDIT_SIGNER
        )
    assert len(_seqs(engine)) == 60

    before = _years_ago(9)
    assert purge_before(engine, before=before, actor="dpo", signer=AUDIT_SIGNER) == Purge(30, 30)
    assert _seqs(engine) == list(range(31, 61))
    [checkpoint] = _checkpoints(engine)
    assert (checkpoint.last_seq, checkpoint.last_hash) == (30, hash_of_30)
    assert (checkpoint.rows_removed, checkpoint.created_by) == (30, "dpo")
    assert abs(checkpoint.purged_before - before) < timedelta(seconds=1)
    with engine.connect() as connection:
        verification = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert verification.intact and verification.rows_checked == 30
    assert verification.last_seq == 60

    # An earlier date: nothing left to remove.
    assert purge_before(engine, before=_years_ago(11), actor="dpo", signer=AUDIT_SIGNER) is None
    assert len(_seqs(engine)) == 30
    assert len(_checkpoints(engine)) == 1

    assert purge_before(engine, before=_years_ago(7), actor="dpo", signer=AUDIT_SIGNER) == Purge(
        50, 20
    )
    assert _seqs(engine) == list(range(51, 61))
    assert [c.last_seq for c in _checkpoints(engine)] == [30, 50]

    write_rows(engine, [datetime.now(UTC)])  # the chain goes on after a purge
    with engine.connect() as connection:
        verification = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert verification.intact and verification.rows_checked == 11
    assert verification.last_seq == 61


@pytest.mark.slow
def test_the_purge_command_refuses_recent_and_future_dates(
    database_url: str, engine: Engine
) -> None:
    env = scenario_env(database_url)
    write_rows(engine, [_years_ago(10) + timedelta(minutes=i) for i in range(15)])
    write_rows(engine, [datetime.now(UTC) - timedelta(minutes=5 - i) for i in range(5)])
    today = datetime.now(UTC).date()

    for when, extra, why in (
        (today - timedelta(days=30), {}, "inside the retention period"),
        (today + timedelta(days=1), {"ACCORD_AUDIT_RETENTION_DAYS": "1"}, "in the future"),
    ):
        result = accord(
            "audit", "purge", "--before", when.isoformat(), env=env | extra, check=False
        )
        assert result.returncode == 1, result.stdout
        assert why in result.stderr
        assert "nothing purged" in result.stderr
        assert _seqs(engine) == list(range(1, 21))
        assert _checkpoints(engine) == []

    malformed = accord("audit", "purge", "--before", "2020-13-45", env=env, check=False)
    assert malformed.returncode == 2 and "Traceback" not in malformed.stderr

    seven_years_ago = (today - timedelta(days=7 * 365)).isoformat()
    result = accord("audit", "purge", "--before", seven_years_ago, "--actor", "dpo", env=env)
    assert "purged 15 rows up to row 15" in result.stdout
    assert _seqs(engine) == list(range(16, 21))
    assert [(c.last_seq, c.rows_removed, c.created_by) for c in _checkpoints(engine)] == [
        (15, 15, "dpo")
    ]
    result = accord("audit", "verify", env=env)
    assert "intact: 5 rows verified, chain head at row 20" in result.stdout

    result = accord("audit", "purge", env=env)  # default: the start of the retention period
    assert "nothing decided before" in result.stdout
    assert len(_checkpoints(engine)) == 1
