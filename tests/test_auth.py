"""Callers and scopes (DESIGN.md) against a real `accord serve`, on both backends.

No key or an unknown key: 401. A scope the route does not accept: 403. A `decide`
client asks only for its own agencies. Keys are shown once and never logged.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.runtime.callers import SCOPES
from app.store.tables import AuditDecision
from tests.conftest import (
    ProcessServer,
    ScenarioService,
    Server,
    create_key,
    scenario_env,
    wait_until,
)

OVERSEE = frozenset({"manage", "audit"})
MANAGE = frozenset({"manage"})
AUDIT = frozenset({"audit"})
DECIDE = frozenset({"decide", "decide:any"})
API = frozenset(SCOPES) - {"metrics"}  # a `metrics` key reads /metrics only
PUBLIC = None  # no authentication at all

# The product's contract: each route and the scopes it accepts.
ROUTES: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): frozenset(SCOPES),
    ("POST", "/v1/decisions"): DECIDE,
    ("POST", "/v1/decisions/batch"): DECIDE,
    ("POST", "/v1/simulate"): OVERSEE,
    ("POST", "/v1/plans"): DECIDE,
    ("GET", "/v1/vocabulary"): API,
    ("GET", "/v1/agreements"): OVERSEE,
    ("POST", "/v1/agreements"): MANAGE,
    ("GET", "/v1/agreements/{agreement_id}"): OVERSEE,
    ("GET", "/v1/agreements/{agreement_id}/versions"): OVERSEE,
    ("POST", "/v1/agreements/{agreement_id}/versions"): MANAGE,
    ("POST", "/v1/agreements/{agreement_id}/activate"): MANAGE,
    ("POST", "/v1/agreements/{agreement_id}/suspend"): MANAGE,
    ("POST", "/v1/agreements/{agreement_id}/revoke"): MANAGE,
    ("POST", "/v1/agreements/{agreement_id}/impact"): OVERSEE,
    ("GET", "/v1/agreements/{agreement_id}/versions/{version}/approvals"): OVERSEE,
    ("POST", "/v1/agreements/{agreement_id}/versions/{version}/approvals"): MANAGE,
    ("GET", "/v1/access-map"): OVERSEE,
    ("POST", "/v1/register/restrictions"): MANAGE,
    ("POST", "/v1/register/consents"): MANAGE,
    ("GET", "/v1/register"): OVERSEE,
    ("DELETE", "/v1/register/{entry_id}"): MANAGE,
    ("POST", "/v1/register/import"): MANAGE,
    ("GET", "/v1/register/export"): OVERSEE,
    ("GET", "/v1/clients"): MANAGE,
    ("POST", "/v1/clients"): MANAGE,
    ("POST", "/v1/clients/{client_id}/revoke"): MANAGE,
    ("GET", "/v1/audit/decisions"): AUDIT,
    ("GET", "/v1/audit/decisions/export"): AUDIT,
    ("GET", "/v1/audit/decisions/{decision_id}"): AUDIT,
    ("GET", "/v1/audit/subject-access/{person_id}"): AUDIT,
    ("GET", "/v1/audit/break-glass"): AUDIT,
    ("POST", "/v1/audit/break-glass/{decision_id}/reviews"): AUDIT,
    ("GET", "/v1/audit/verify"): AUDIT,
    ("GET", "/v1/audit/head"): AUDIT,
    ("GET", "/v1/audit/stream"): AUDIT,
    ("GET", "/v1/changes"): AUDIT,
}
# Plausible path values that name nothing, so an admitted call changes nothing.
PATH_VALUES = {
    "agreement_id": "isa-no-such-agreement",
    "entry_id": "no-such-entry",
    "client_id": "no-such-client",
    "decision_id": "00000000-0000-4000-8000-000000000000",
    "person_id": "P-000",
    "version": "1",
}

AGENCY_A = "police.lancashire"
# One client per scope; the `decide` client acts for agency A only.
CLIENTS = {
    "decide": ("t-decide", AGENCY_A),
    "decide:any": ("t-decide-any", "housing.blackpool-coastal"),
    "audit": ("t-audit", AGENCY_A),
    "manage": ("t-manage", AGENCY_A),
    "metrics": ("t-metrics", AGENCY_A),
}


# Queries that keep an admitted call short: the audit stream never ends, so it is asked
# for a seq it refuses (422, after its scope was checked).
QUERIES = {"/v1/audit/stream": {"after": "-1"}}


def _call(server: Server, method: str, path: str, key: str | None) -> httpx.Response:
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    body: dict[str, Any] = {"json": {}} if method == "POST" else {}
    return server.request(method, url, key=key, params=QUERIES.get(path), **body)


def _served_routes(server: Server) -> set[tuple[str, str]]:
    paths = server.get("/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def _log_events(server: Server) -> list[dict[str, Any]]:
    events = []
    for line in server.logs().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _audit_rows(service: ScenarioService, **where: str) -> list[AuditDecision]:
    with Session(service.engine) as session:
        query = select(AuditDecision).filter_by(**where)
        return list(session.scalars(query))


@pytest.fixture(scope="module")
def keys(scenario_service: ScenarioService) -> dict[str, str]:
    """A key per scope, made with the CLI, once the server has picked the clients up."""
    server = scenario_service.server
    env = scenario_env(scenario_service.database_url)
    made = {
        scope: create_key(env, client_id, scopes=scope, agencies=agency)
        for scope, (client_id, agency) in CLIENTS.items()
    }
    for key in made.values():

        def valid(k: str = key) -> bool:  # known (a `metrics` key is refused here: 403)
            return server.get("/v1/vocabulary", key=k).status_code != 401

        assert wait_until(valid, 5)
    return made


def test_route_table_is_the_served_route_set(scenario_service: ScenarioService) -> None:
    assert _served_routes(scenario_service.server) == set(ROUTES)


def test_every_route_but_health_needs_a_known_key(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    routes = _served_routes(server)
    unknown = "acc_" + secrets.token_urlsafe(32)
    failures = []
    for method, path in sorted(routes):
        if path in ("/healthz", "/readyz"):
            assert _call(server, method, path, None).status_code == 200
            continue
        for key in (None, unknown):
            response = _call(server, method, path, key)
            problem = response.headers.get("content-type") == "application/problem+json"
            if not (
                response.status_code == 401
                and problem
                and response.json()["status"] == 401
                and response.headers.get("www-authenticate") == "Bearer"
            ):
                failures.append(f"{method} {path} key={key is not None}: {response.status_code}")
    assert not failures, "\n".join(failures)


def test_every_route_refuses_scopes_it_does_not_accept(
    scenario_service: ScenarioService, keys: dict[str, str]
) -> None:
    server = scenario_service.server
    failures = []
    for (method, path), accepted in ROUTES.items():
        if accepted is PUBLIC:
            continue
        for scope, key in keys.items():
            response = _call(server, method, path, key)
            if scope in accepted:
                ok = response.status_code not in (401, 403)
            else:
                ok = (
                    response.status_code == 403
                    and response.headers["content-type"] == "application/problem+json"
                    and CLIENTS[scope][0] in response.json()["detail"]
                )
            if not ok:
                failures.append(f"{method} {path} as {scope}: {response.status_code}")
    assert not failures, "\n".join(failures)


def _question(requester: str, holder: str, path: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requester": requester,
        "holder": holder,
        "subject": {"id": "P-101", "attributes": {"age": 12}},
        "purpose": "safeguarding.children",
    }
    if path.endswith("batch"):
        return {**body, "fields": ["criminal.convictions", "identity.name"]}
    return {**body, "field": "criminal.convictions"}


def _decision_ids(answer: dict[str, Any]) -> list[str]:
    return [d["decision_id"] for d in answer.get("decisions", [answer])]


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/decisions/batch"])
def test_decide_client_asks_only_for_its_agencies(
    scenario_service: ScenarioService, keys: dict[str, str], path: str
) -> None:
    server = scenario_service.server
    children, mental_health = "la.blackpool.childrens-services", "nhs.lancashire-mental-health"
    allowed = [
        ("decide", children, AGENCY_A),  # A holds
        ("decide", AGENCY_A, mental_health),  # A asks
        ("decide:any", children, mental_health),  # neither, but decide:any
    ]
    for scope, requester, holder in allowed:
        response = server.post(path, key=keys[scope], json=_question(requester, holder, path))
        assert response.status_code == 200, response.text
        # The audit row records the calling client.
        for decision_id in _decision_ids(response.json()):
            [row] = _audit_rows(scenario_service, decision_id=decision_id)
            assert row.client == CLIENTS[scope][0]

    request_id = f"neither-{uuid.uuid4().hex}"
    response = server.post(
        path,
        key=keys["decide"],
        json=_question(children, mental_health, path),
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert _audit_rows(scenario_service, request_id=request_id) == []
    refusals = [e for e in _log_events(server) if e.get("request_id") == request_id]
    assert any(
        e.get("client") == "t-decide"
        and e.get("requester") == children
        and e.get("holder") == mental_health
        and e.get("level") == "warning"
        for e in refusals
    ), refusals


def _problem_names(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {p["name"]: p["reason"] for p in response.json().get("invalid_params", [])}


def test_client_lifecycle_through_the_api(
    scenario_service: ScenarioService, keys: dict[str, str]
) -> None:
    server = scenario_service.server
    new = {"id": "t-lifecycle", "name": "Lifecycle", "scopes": ["decide"], "agencies": [AGENCY_A]}
    created = server.post("/v1/clients", json=new)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key

    listing = server.get("/v1/clients")
    assert listing.status_code == 200
    assert key not in listing.text
    assert all("key" not in client for client in listing.json())
    assert "t-lifecycle" in {client["id"] for client in listing.json()}

    assert server.get("/v1/vocabulary", key=key).status_code == 200
    revoked = server.post("/v1/clients/t-lifecycle/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == server.client_id
    assert wait_until(lambda: server.get("/v1/vocabulary", key=key).status_code == 401, 2)
    again = server.post("/v1/clients/t-lifecycle/revoke")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    bad_scope = server.post(
        "/v1/clients", json={**new, "id": "t-bad", "scopes": ["decide", "root"]}
    )
    assert bad_scope.status_code == 422
    assert "root" in _problem_names(bad_scope)["scopes[1]"]
    bad_agency = server.post(
        "/v1/clients", json={**new, "id": "t-bad", "agencies": [AGENCY_A, "police.atlantis"]}
    )
    assert bad_agency.status_code == 422
    assert "police.atlantis" in _problem_names(bad_agency)["agencies[1]"]

    changes = server.get(
        "/v1/changes",
        key=keys["audit"],
        params={"target_type": "client", "target_id": "t-lifecycle"},
    )
    assert changes.status_code == 200, changes.text
    assert sorted((c["action"], c["actor"]) for c in changes.json()["items"]) == [
        ("client.create", server.client_id),
        ("client.revoke", server.client_id),
    ]


@pytest.mark.slow  # its log lines: a real `accord serve`
def test_keys_are_never_logged(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    server = process_server_factory(scenario_env(database_url))
    unknown = "acc_" + secrets.token_urlsafe(32)
    new = {"id": "t-leak", "name": "Leak", "scopes": ["decide"], "agencies": [AGENCY_A]}
    created = server.post("/v1/clients", json=new)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    question = _question("la.blackpool.childrens-services", AGENCY_A, "/v1/decisions")
    assert server.post("/v1/decisions", key=key, json=question).status_code == 200
    neither = _question(
        "la.blackpool.childrens-services", "nhs.blackpool-hospitals", "/v1/decisions"
    )
    assert server.post("/v1/decisions", key=key, json=neither).status_code == 403
    assert server.get("/v1/clients", key=key).status_code == 403
    assert server.get("/v1/vocabulary", key=unknown).status_code == 401
    # The auditor console takes a key in a form body.
    for console_key in (server.key, unknown):
        login = server.post("/console/login", key=None, data={"key": console_key})
        assert login.status_code in (200, 303)
    assert server.post("/v1/clients/t-leak/revoke").status_code == 200
    assert server.get("/v1/vocabulary", key=key).status_code == 401
    assert server.get("/v1/vocabulary", key=None).status_code == 401
    server.stop()

    logs = server.logs()
    statuses = {event.get("status") for event in _log_events(server)}
    assert 401 in statuses and "t-leak" in logs  # the log saw these requests
    for secret in (server.key, key, unknown):
        assert secret not in logs
        assert secret.removeprefix("acc_") not in logs
    assert "Bearer" not in logs


def test_the_key_is_checked_before_the_body_is_read(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    for path in ("/v1/decisions", "/v1/agreements", "/v1/clients"):
        response = server.request(
            "POST",
            path,
            key=None,
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 401, path
    assert server.get("/openapi.json", key=None).status_code == 401
    assert server.get("/docs", key="unknown").status_code == 401
