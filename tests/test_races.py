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

from tests.conftest import ProcessServer, import_agreements_from, scenario_env

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
