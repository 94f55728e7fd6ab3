"""Concurrent creates and state changes of the same thing: as many succeed as may (one,
for all but an append-only review), the others are told 409, never 500; afterwards the
record, its change log and the revision replicas follow have moved once.

Twelve requests are released together by a barrier against a real `accord serve` (its
threads and connection pool), on both backends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.database import make_engine
from app.store.revisions import CLIENTS, POLICY, REGISTER, Feed, read_revision
from app.store.tables import RegisterChange
from tests.conftest import (
    SCENARIO,
    ProcessServer,
    import_agreements_from,
    jsonable,
    load_yaml,
    scenario_env,
)

pytestmark = pytest.mark.slow

RACERS = 12


def _released_together(
    server: ProcessServer, send: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """RACERS calls of `send`, each on its own connection, released by one barrier."""
    barrier = threading.Barrier(RACERS)
    responses: list[httpx.Response] = []

    def one() -> None:
        with server.client() as api:
            barrier.wait()
            responses.append(send(api))

    threads = [threading.Thread(target=one) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(responses) == RACERS
    return responses


def _race(server: ProcessServer, path: str, body: dict[str, Any]) -> Counter[int]:
    return Counter(
        r.status_code for r in _released_together(server, lambda api: api.post(path, json=body))
    )


def _refusals_are_problems(responses: list[httpx.Response]) -> None:
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"], response.text


def _changes(server: ProcessServer, target_type: str, target_id: str) -> list[str]:
    """The change log's actions on one record, oldest first."""
    page = server.get("/v1/changes", params={"target_type": target_type, "target_id": target_id})
    assert page.status_code == 200, page.text
    return [change["action"] for change in reversed(page.json()["items"])]


def _revision(database_url: str, feed: Feed) -> int:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return read_revision(session, feed)
    finally:
        engine.dispose()


def _scenario_server(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> ProcessServer:
    env = scenario_env(database_url)
    import_agreements_from(env)
    return process_server_factory(env)


NEW_AGREEMENT = {
    "id": "isa-raced",
    "title": "Raced into being",
    "valid_from": "2026-01-01",
    "valid_until": "2028-01-01",
    "providers": ["police"],
    "recipients": ["la.blackpool.childrens-services"],
    "lawful_basis": {"article6": "public-task"},
    "grants": [{"purposes": ["safeguarding.children"], "fields": ["identity.name"]}],
}


@pytest.mark.parametrize(
    ("path", "body", "change"),
    [
        (
            "/v1/clients",
            {
                "id": "raced-client",
                "name": "Raced",
                "scopes": ["audit"],
                "agencies": ["police.lancashire"],
            },
            ("client", "raced-client", "client.create"),
        ),
        (
            "/v1/register/restrictions",
            {"id": "raced-objection", "person": "P-RACE", "kind": "objection", "reason": "asked"},
            ("register", "raced-objection", "register.add-objection"),
        ),
        (
            "/v1/register/consents",
            {"id": "raced-consent", "person": "P-RACE", "reason": "agreed"},
            ("register", "raced-consent", "register.add-consent"),
        ),
        ("/v1/agreements", NEW_AGREEMENT, ("agreement", "isa-raced", "agreement.created")),
    ],
)
def test_concurrent_creates_give_one_201_and_409s(
    database_url: str,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
    path: str,
    body: dict[str, Any],
    change: tuple[str, str, str],
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = process_server_factory(env)
    statuses = _race(server, path, body)
    assert statuses == Counter({201: 1, 409: RACERS - 1}), statuses
    target_type, target_id, action = change
    assert _changes(server, target_type, target_id) == [action]


def test_concurrent_new_versions_are_each_stored_or_told_409(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    """Twelve different revisions of one agreement at once: each is stored as the next
    version or refused with 409 (another took that version number); never a 500."""
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = process_server_factory(env)
    document = load_yaml(SCENARIO / "agreements" / "isa-early-help.yaml")
    barrier = threading.Barrier(RACERS)
    statuses: list[int] = []

    def revise(n: int) -> None:
        revised = {key: jsonable(value) for key, value in document.items()}
        body = {"document": {**revised, "title": f"revision {n}"}, "reason": f"r{n}"}
        with server.client() as api:
            barrier.wait()
            statuses.append(
                api.post("/v1/agreements/isa-early-help/versions", json=body).status_code
            )

    threads = [threading.Thread(target=revise, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses
    versions = server.get("/v1/agreements/isa-early-help/versions").json()
    numbers = sorted(item["version"] for item in versions)
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) == 1 + statuses.count(201)


@pytest.mark.parametrize(
    ("agreement_id", "action", "status"),
    [
        ("isa-health-schools-draft", "activate", "active"),  # from draft
        ("isa-housing-police", "activate", "active"),  # from suspended
        ("isa-early-help", "suspend", "suspended"),
        ("isa-early-help", "revoke", "revoked"),
    ],
)
def test_concurrent_status_changes_give_one_201_and_409s(
    database_url: str,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
    agreement_id: str,
    action: str,
    status: str,
) -> None:
    """Twelve activations (suspensions, revocations) of one agreement at once: one new
    version, the others told 409 (another took that version number, or the agreement is no
    longer in a state to change); one change record, the policy revision moved once."""
    server = _scenario_server(database_url, process_server_factory)
    path = f"/v1/agreements/{agreement_id}"
    before = server.get(f"{path}/versions").json()
    changes_before = _changes(server, "agreement", agreement_id)
    revision = _revision(database_url, POLICY)

    responses = _released_together(
        server, lambda api: api.post(f"{path}/{action}", json={"reason": "raced"})
    )
    assert Counter(r.status_code for r in responses) == Counter({201: 1, 409: RACERS - 1})
    _refusals_are_problems(responses)
    after = server.get(f"{path}/versions").json()
    assert after[: len(before)] == before
    assert [(v["version"], v["status"]) for v in after[len(before) :]] == [
        (len(before) + 1, status)
    ]
    assert server.get(path).json()["status"] == status
    past = {"activate": "activated", "suspend": "suspended", "revoke": "revoked"}[action]
    assert _changes(server, "agreement", agreement_id) == [*changes_before, f"agreement.{past}"]
    assert _revision(database_url, POLICY) == revision + 1


def test_concurrent_revocations_of_a_client_give_one_200_and_409s(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    server = _scenario_server(database_url, process_server_factory)
    client = {
        "id": "raced-revoke",
        "name": "R",
        "scopes": ["audit"],
        "agencies": ["police.lancashire"],
    }
    created = server.post("/v1/clients", json=client)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert server.get("/v1/changes", key=key).status_code == 200
    revision = _revision(database_url, CLIENTS)

    responses = _released_together(server, lambda api: api.post("/v1/clients/raced-revoke/revoke"))
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: RACERS - 1})
    _refusals_are_problems(responses)
    winner = next(r.json() for r in responses if r.status_code == 200)
    listed = {c["id"]: c for c in server.get("/v1/clients").json()}
    assert listed["raced-revoke"]["revoked_at"] == winner["revoked_at"]
    assert _changes(server, "client", "raced-revoke") == ["client.create", "client.revoke"]
    assert _revision(database_url, CLIENTS) == revision + 1
    assert server.get("/v1/changes", key=key).status_code == 401


def test_concurrent_removals_of_a_register_entry_give_one_204_and_409s(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    server = _scenario_server(database_url, process_server_factory)
    entry = {"id": "raced-removal", "person": "P-RACE", "kind": "objection", "reason": "asked"}
    assert server.post("/v1/register/restrictions", json=entry).status_code == 201
    revision = _revision(database_url, REGISTER)

    responses = _released_together(server, lambda api: api.delete("/v1/register/raced-removal"))
    assert Counter(r.status_code for r in responses) == Counter({204: 1, 409: RACERS - 1})
    _refusals_are_problems(responses)
    listed = server.get("/v1/register", params={"person": "P-RACE", "include_removed": True})
    assert [e["removed_at"] is not None for e in listed.json()["entries"]] == [True]
    assert _changes(server, "register", "raced-removal") == [
        "register.add-objection",
        "register.remove-objection",
    ]
    # the register feed: one change for the removal, as replicas follow it
    assert _revision(database_url, REGISTER) == revision + 1
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            feed = session.scalar(
                select(func.count()).where(RegisterChange.entry_id == "raced-removal")
            )
    finally:
        engine.dispose()
    assert feed == 2  # recorded, removed


def test_concurrent_imports_of_one_register_file_store_it_once(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    """An import is idempotent by design (an entry stored with the same content is
    unchanged): one import adds the rows; each other either finds them stored (200,
    unchanged) or collided with that one's insert (409: import the file again)."""
    server = _scenario_server(database_url, process_server_factory)
    ids = [f"raced-import-{n}" for n in range(3)]
    lines = ["id,person,kind,recipients,fields,purposes,until,reason"]
    lines += [f"{entry_id},P-RACE,objection,,,,,asked" for entry_id in ids]
    body = ("\n".join(lines) + "\n").encode()
    revision = _revision(database_url, REGISTER)

    responses = _released_together(
        server,
        lambda api: api.post(
            "/v1/register/import", content=body, headers={"content-type": "text/csv"}
        ),
    )
    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
    _refusals_are_problems(responses)
    answers = Counter(
        (r.json()["added"], r.json()["unchanged"]) for r in responses if r.status_code == 200
    )
    assert answers[(3, 0)] == 1 and set(answers) <= {(3, 0), (0, 3)}, answers
    listed = server.get("/v1/register", params={"person": "P-RACE"}).json()["entries"]
    assert sorted(e["id"] for e in listed) == ids
    assert _revision(database_url, REGISTER) == revision + len(ids)
    page = server.get("/v1/changes", params={"target_type": "register"}).json()["items"]
    assert [c["action"] for c in page].count("register.import") == 1


def test_concurrent_reviews_of_a_break_glass_permit_are_each_recorded(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    """Reviews are append-only by design (a later review adds to the first, it does not
    replace it): twelve at once are twelve reviews, none refused, none lost."""
    server = _scenario_server(database_url, process_server_factory)
    emergency = {
        "requester": "la.blackpool.childrens-services",
        "holder": "nhs.blackpool-hospitals",
        "subject": {"id": "P-101", "attributes": {"age": 12}},
        "field": "health.sexual",
        "purpose": "safeguarding.children",
        "context": {"emergency": True, "justification": "child at immediate risk"},
    }
    decided = server.post("/v1/decisions", json=emergency).json()
    assert (decided["decision"], decided["break_glass"]) == ("permit", True), decided
    path = f"/v1/audit/break-glass/{decided['decision_id']}/reviews"

    responses = _released_together(
        server,
        lambda api: api.post(
            path, json={"outcome": "justified", "note": "checked", "reviewer": "J. Okafor"}
        ),
    )
    assert Counter(r.status_code for r in responses) == Counter({201: RACERS})
    queue = server.get("/v1/audit/break-glass", params={"status": "all"}).json()
    (entry,) = [e for e in queue if e["decision"]["decision_id"] == decided["decision_id"]]
    assert len(entry["reviews"]) == RACERS
