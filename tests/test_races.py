"""Concurrent creates of the same thing: one succeeds, the others are told 409, never 500.

Twelve requests are released together by a barrier against a real `accord serve` (its
threads and connection pool), on both backends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

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


def _race(server: ProcessServer, path: str, body: dict[str, Any]) -> Counter[int]:
    barrier = threading.Barrier(RACERS)
    statuses: list[int] = []

    def one() -> None:
        with server.client() as api:
            barrier.wait()
            statuses.append(api.post(path, json=body).status_code)

    threads = [threading.Thread(target=one) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(statuses)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/clients",
            {
                "id": "raced-client",
                "name": "Raced",
                "scopes": ["audit"],
                "agencies": ["police.lancashire"],
            },
        ),
        (
            "/v1/register/restrictions",
            {"id": "raced-objection", "person": "P-RACE", "kind": "objection", "reason": "asked"},
        ),
    ],
)
def test_concurrent_creates_give_one_201_and_409s(
    database_url: str,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
    path: str,
    body: dict[str, Any],
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = process_server_factory(env)
    statuses = _race(server, path, body)
    assert statuses == Counter({201: 1, 409: RACERS - 1}), statuses


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
