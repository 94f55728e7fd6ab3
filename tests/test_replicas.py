"""Two replicas on one PostgreSQL: a change made through one is enforced by the other within 1 s."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from app.store.database import upgrade_schema
from tests.conftest import SCENARIO, Server, accord, create_key, scenario_env, start_server
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.slow  # real `accord serve` replicas

REQUEST = {
    "requester": "la.blackpool.adult-services",
    "holder": "nhs.blackpool-hospitals",
    "subject": {"id": "P-202", "attributes": {"age": 80}},
    "field": "health.mental",
    "purpose": "safeguarding.adults",
}


class DecisionLoad:
    """Threads asking replica 2 the same question without pause, keeping every answer."""

    def __init__(self, server: Server, key: str, threads: int) -> None:
        self.server, self.key = server, key
        self.answers: list[list[tuple[float, int, str]]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._ask, args=(answers,)) for answers in self.answers
        ]

    def _ask(self, answers: list[tuple[float, int, str]]) -> None:
        with httpx.Client(
            base_url=self.server.url, headers={"authorization": f"Bearer {self.key}"}, timeout=10
        ) as client:
            while not self._stop.is_set():
                response = client.post("/v1/decisions", json=REQUEST)
                decision = response.json().get("decision", "") if response.is_success else ""
                answers.append((time.monotonic(), response.status_code, decision))

    def __enter__(self) -> DecisionLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_a_suspension_through_one_replica_stops_the_other_within_a_second(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    url = postgres.new_database()
    upgrade_schema(url)
    env = scenario_env(url)
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    officer = create_key(
        env, "ig-officer", scopes="manage,audit", agencies="la.blackpool.adult-services"
    )
    partner = create_key(
        env, "adult-care-system", scopes="decide", agencies="la.blackpool.adult-services"
    )
    replica_1 = start_server(env, tmp_path)
    replica_2 = start_server(env, tmp_path)
    try:
        with DecisionLoad(replica_2, partner, threads=4) as load:
            time.sleep(1.5)
            response = replica_1.post(
                "/v1/agreements/isa-adult-safeguarding/suspend",
                json={"reason": "audit found over-sharing"},
                key=officer,
            )
            suspended_at = time.monotonic()
            assert response.status_code == 201, response.text
            time.sleep(2.0)
        history = replica_2.get("/v1/agreements/isa-adult-safeguarding/versions", key=officer)
        changes = replica_2.get(
            "/v1/changes", params={"target_id": "isa-adult-safeguarding"}, key=officer
        )
    finally:
        replica_1.stop()
        replica_2.stop()

    all_answers = [answer for answers in load.answers for answer in answers]
    assert len(all_answers) > 50
    assert {status for _, status, _ in all_answers} == {200}, "a decision failed under load"
    before = [d for at, _, d in all_answers if at < suspended_at - 0.05]
    assert before and set(before) == {"permit"}
    first_denies = [
        next(at for at, _, decision in answers if decision == "deny") for answers in load.answers
    ]
    lag = max(first_denies) - suspended_at
    assert lag < 1.0, f"replica 2 permitted for {lag:.2f} s after the suspension"
    for answers in load.answers:  # once denied, never permitted again
        decisions = [decision for _, _, decision in answers]
        assert "permit" not in decisions[decisions.index("deny") :]

    latest = history.json()[-1]
    assert (latest["status"], latest["created_by"]) == ("suspended", "ig-officer")
    newest_change = changes.json()["items"][0]
    assert (newest_change["action"], newest_change["actor"]) == (
        "agreement.suspended",
        "ig-officer",
    )
