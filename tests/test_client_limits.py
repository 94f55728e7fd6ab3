"""A rate and a concurrency limit per API client (app/web/limits.py), the app in-process on SQLite.

Two partner systems share one service. A noisy one asking far over its rate gets 429
problem+json with `Retry-After`, while a quiet one within its own rate is never refused.
Requests held in flight (at a real person-information service on loopback that answers
only when the test lets it) use up one client's concurrency and not another's. A refused
request records nothing: the audit trail holds exactly the decisions answered 200.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store.database import upgrade_schema
from tests.conftest import (
    InProcessServer,
    Server,
    all_pages,
    create_key,
    import_agreements_from,
    scenario_env,
    start_in_process,
    wait_until,
)

CHILDREN = "la.blackpool.childrens-services"
RATE = 5  # ACCORD_CLIENT_RATE_PER_SECOND of the load below
NOISY_THREADS = 4
QUIET_REQUESTS = 10
QUIET_PAUSE = 0.3  # one request at a time, then this pause: under RATE requests a second
MAX_CONCURRENT = 3  # ACCORD_CLIENT_MAX_CONCURRENT of the in-flight test


def decision(person: str, *, age: int | None = 12) -> dict[str, Any]:
    """Police convictions for child safeguarding, which the scenario's MASH agreement
    permits for a child; without an age, Accord asks the person-information service."""
    return {
        "requester": CHILDREN,
        "holder": "police.lancashire",
        "subject": {"id": person, "attributes": {} if age is None else {"age": age}},
        "field": "criminal.convictions",
        "purpose": "safeguarding.children",
    }


def sqlite_env(folder: Path, **settings: str) -> dict[str, str]:
    url = f"sqlite:///{folder / 'accord.db'}"
    upgrade_schema(url)
    env = {**scenario_env(url), **settings}
    import_agreements_from(env)
    return env


def check_refused(response: httpx.Response, client: str, limit: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    problem = response.json()
    assert (problem["status"], problem["title"]) == (429, "Too many requests")
    assert f"client '{client}'" in problem["detail"] and limit in problem["detail"], problem


def audited(server: Server, client: str) -> set[str]:
    """The decision ids the audit search holds for this client."""
    with server.client() as api:
        return {row["decision_id"] for row in all_pages(api, {"client": client}, limit=500)}


def answered(responses: list[httpx.Response]) -> set[str]:
    return {r.json()["decision_id"] for r in responses if r.status_code == 200}


# Two clients under load: the noisy one is held to its rate, the quiet one is untouched.


@dataclass
class Load:
    server: InProcessServer
    noisy: list[httpx.Response]
    quiet: list[httpx.Response]
    seconds: float  # from before the first request to after the last answer


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Load]:
    """A noisy system asking without pause on four threads while a quiet one asks ten times."""
    env = sqlite_env(tmp_path_factory.mktemp("limits"), ACCORD_CLIENT_RATE_PER_SECOND=str(RATE))
    noisy_key = create_key(env, "noisy-system", scopes="decide", agencies=CHILDREN)
    quiet_key = create_key(env, "quiet-system", scopes="decide", agencies=CHILDREN)
    server = start_in_process(env)
    noisy: list[httpx.Response] = []
    quiet: list[httpx.Response] = []
    lock, done = threading.Lock(), threading.Event()

    def hammer(thread: int) -> None:
        with server.client(key=noisy_key) as api:
            while not done.is_set():
                response = api.post("/v1/decisions", json=decision(f"P-NOISY-{thread}"))
                with lock:
                    noisy.append(response)

    hammers = [threading.Thread(target=hammer, args=(n,)) for n in range(NOISY_THREADS)]
    started = time.monotonic()
    try:
        for thread in hammers:
            thread.start()
        with server.client(key=quiet_key) as api:
            for n in range(QUIET_REQUESTS):
                quiet.append(api.post("/v1/decisions", json=decision(f"P-QUIET-{n}")))
                time.sleep(QUIET_PAUSE)
    finally:
        done.set()
        for thread in hammers:
            thread.join(timeout=60)
    seconds = time.monotonic() - started
    try:
        yield Load(server, noisy, quiet, seconds)
    finally:
        server.stop()


def test_a_noisy_client_over_its_rate_gets_429_with_retry_after(load: Load) -> None:
    statuses = {r.status_code for r in load.noisy}
    assert statuses == {200, 429}, statuses
    for response in load.noisy:
        if response.status_code == 429:
            check_refused(response, "noisy-system", f"rate limit of {RATE} requests per second")
    # The bucket starts with one second's worth and fills at RATE a second: no more got through.
    admitted = len(answered(load.noisy))
    assert RATE <= admitted <= RATE + RATE * load.seconds, (admitted, load.seconds)


def test_a_quiet_client_within_its_rate_is_never_refused(load: Load) -> None:
    assert [r.status_code for r in load.quiet] == [200] * QUIET_REQUESTS
    assert len(load.noisy) > 10 * QUIET_REQUESTS, "the noisy client hardly asked"


# A refused request records nothing.


def test_a_refused_request_records_nothing(load: Load) -> None:
    for client, responses in (("noisy-system", load.noisy), ("quiet-system", load.quiet)):
        rows = audited(load.server, client)
        assert rows == answered(responses), client
        refused = sum(r.status_code == 429 for r in responses)
        assert refused == len(responses) - len(rows), client
    metrics = load.server.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    counted = re.search(
        r'^accord_client_limit_refusals_total\{client="noisy-system",limit="rate"\} (\S+)$',
        metrics.text,
        re.MULTILINE,
    )
    assert counted is not None, metrics.text
    assert float(counted.group(1)) == sum(r.status_code == 429 for r in load.noisy)


# Requests in flight beyond the limit are refused, for that client only.


class HeldPersonService:
    """A person-information service that answers (age 12) only once `release` is set."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = threading.Event()
        lock, service = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    service.arrived += 1
                service.release.wait(60)
                body = b'{"age": 12}'
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # Accord gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/persons/{{person_id}}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def people() -> Iterator[HeldPersonService]:
    service = HeldPersonService()
    yield service
    service.close()


def test_requests_in_flight_beyond_the_limit_are_refused_for_that_client_only(
    tmp_path: Path, people: HeldPersonService, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    env = sqlite_env(
        tmp_path,
        ACCORD_PERSON_INFO_URL=people.url,
        ACCORD_PERSON_INFO_TIMEOUT_SECONDS="30",
        ACCORD_CLIENT_MAX_CONCURRENT=str(MAX_CONCURRENT),
    )
    busy = create_key(env, "busy-system", scopes="decide", agencies=CHILDREN)
    other = create_key(env, "other-system", scopes="decide", agencies=CHILDREN)
    server = server_factory(env)
    held: list[httpx.Response] = []

    def ask_without_age(n: int) -> None:  # held until the person service answers
        with server.client(key=busy, timeout=60) as api:
            held.append(api.post("/v1/decisions", json=decision(f"P-HELD-{n}", age=None)))

    askers = [threading.Thread(target=ask_without_age, args=(n,)) for n in range(MAX_CONCURRENT)]
    try:
        for asker in askers:
            asker.start()
        assert wait_until(lambda: people.arrived == MAX_CONCURRENT, 30), people.arrived
        extra = [
            server.post("/v1/decisions", key=busy, json=decision(f"P-EXTRA-{n}")) for n in range(2)
        ]
        for response in extra:
            check_refused(response, "busy-system", f"{MAX_CONCURRENT} requests in flight")
        meanwhile = server.post("/v1/decisions", key=other, json=decision("P-OTHER"))
        assert meanwhile.status_code == 200, meanwhile.text
    finally:
        people.release.set()
        for asker in askers:
            asker.join(timeout=60)
    assert [(r.status_code, r.json()["decision"]) for r in held] == [
        (200, "permit")
    ] * MAX_CONCURRENT

    # Every answer gives its place back, an error as much as a decision.
    invalid = [
        server.post("/v1/decisions", key=busy, json={"field": "criminal.convictions"})
        for _ in range(MAX_CONCURRENT + 1)
    ]
    assert {r.status_code for r in invalid} == {422}
    after = [
        server.post("/v1/decisions", key=busy, json=decision(f"P-AFTER-{n}"))
        for n in range(MAX_CONCURRENT + 1)
    ]
    assert {r.status_code for r in after} == {200}
    assert audited(server, "busy-system") == answered(held + after)
