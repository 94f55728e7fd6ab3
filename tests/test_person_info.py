"""Person facts fetched from a real person-information service over HTTP.

A small stdlib HTTP server on loopback plays the service; what it answers is set
per person id, and it counts the calls it gets. A real `accord serve` asks it
for a person's age when the request carries none and an agreement between the
parties conditions on age. Every answer is checked against its audit row.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import Server, import_agreements_from, scenario_env

TIMEOUT = 0.5  # ACCORD_PERSON_INFO_TIMEOUT_SECONDS
SLOW = -1  # a status meaning: answer only long after the timeout
CHILDREN = {
    "requester": "la.blackpool.childrens-services",
    "holder": "police.lancashire",
    "purpose": "safeguarding.children",
}
ADULTS: dict[str, Any] = {
    **CHILDREN,
    "requester": "la.blackpool.adult-services",
    "purpose": "safeguarding.adults",
}


class PersonInfoServer:
    """The person-information service: `answers[person_id] = (status, body)`."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.calls: Counter[str] = Counter()
        self.released = threading.Event()  # set at teardown: slow answers stop waiting
        lock, service = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                person_id = unquote(self.path.removeprefix("/persons/"))
                with lock:
                    service.calls[person_id] += 1
                status, body = service.answers.get(person_id, (404, b'{"error": "unknown"}'))
                if status == SLOW:
                    service.released.wait(TIMEOUT + 3)
                    status = 200
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # Accord gave up waiting and closed the connection

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, person_id: str, payload: Any, status: int = 200) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answers[person_id] = (status, body)

    def stop(self) -> None:
        """Shut down and close the listening socket: nothing listens on the port any more."""
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def info() -> Iterator[PersonInfoServer]:
    server = PersonInfoServer()
    yield server
    server.stop()


@pytest.fixture
def accord_server(
    database_url: str, info: PersonInfoServer, server_factory: Callable[[dict[str, str]], Server]
) -> Server:
    env = {
        **scenario_env(database_url),
        "ACCORD_PERSON_INFO_URL": f"http://127.0.0.1:{info.port}/persons/{{person_id}}",
        "ACCORD_PERSON_INFO_TIMEOUT_SECONDS": str(TIMEOUT),
        "ACCORD_PERSON_INFO_CACHE_SECONDS": "60",
    }
    import_agreements_from(env)
    return server_factory(env)


def decide(
    server: Server, person_id: str, attributes: dict[str, Any] | None = None, **request: Any
) -> dict[str, Any]:
    """Ask for one field (police convictions for child safeguarding unless told otherwise)."""
    body = {
        **CHILDREN,
        "field": "criminal.convictions",
        **request,
        "subject": {"id": person_id, "attributes": attributes or {}},
    }
    response = server.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def check_audited(engine: Engine, answer: dict[str, Any], decision: str, reason: str) -> None:
    assert (answer["decision"], answer["reasons"][0]["code"]) == (decision, reason), answer
    with Session(engine) as session:
        row = session.scalars(
            select(AuditDecision).where(AuditDecision.decision_id == answer["decision_id"])
        ).one()
    assert (row.decision, row.reason, row.field) == (decision, reason, answer["field"])


def test_a_fetched_age_decides_and_is_cached(
    accord_server: Server, info: PersonInfoServer, engine: Engine
) -> None:
    info.answer("P-child", {"age": 12})
    info.answer("P-adult", {"age": 40})
    info.answer("P-born", {"birth_date": "2015-06-01"})
    info.answer("P-batch", {"age": 9})

    check_audited(engine, decide(accord_server, "P-child"), "permit", "agreement")
    check_audited(engine, decide(accord_server, "P-adult"), "deny", "subject-condition-not-met")
    check_audited(engine, decide(accord_server, "P-born"), "permit", "agreement")
    assert info.calls == {"P-child": 1, "P-adult": 1, "P-born": 1}

    # Within the cache time the same person is not fetched again; another person is.
    check_audited(
        engine, decide(accord_server, "P-child", field="criminal.arrests"), "permit", "agreement"
    )
    assert info.calls == {"P-child": 1, "P-adult": 1, "P-born": 1}

    # An age in the request is used as it stands: the service is not asked.
    check_audited(engine, decide(accord_server, "P-given", {"age": 12}), "permit", "agreement")
    check_audited(
        engine,
        decide(accord_server, "P-given-born", {"birth_date": "1980-01-01"}),
        "deny",
        "subject-condition-not-met",
    )
    # No agreement between early help and schools conditions on age: not asked either.
    early_help = decide(
        accord_server,
        "P-no-condition",
        requester="la.blackpool.early-help",
        holder="edu.blackpool-schools",
        field="education.attendance",
        purpose="early-help",
    )
    check_audited(engine, early_help, "deny", "consent-required")
    assert info.calls == {"P-child": 1, "P-adult": 1, "P-born": 1}

    # A batch fetches the person once for all its fields.
    fields = ["identity.name", "criminal.convictions", "criminal.intelligence"]
    response = accord_server.post(
        "/v1/decisions/batch",
        json={**CHILDREN, "subject": {"id": "P-batch"}, "fields": fields},
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["permitted"] == ["identity.name", "criminal.convictions"]
    expected = {
        "identity.name": ("permit", "agreement"),
        "criminal.convictions": ("permit", "agreement"),
        "criminal.intelligence": ("deny", "field-not-covered"),
    }
    for answer in batch["decisions"]:
        check_audited(engine, answer, *expected[answer["field"]])
    assert info.calls == {"P-child": 1, "P-adult": 1, "P-born": 1, "P-batch": 1}


MALFORMED = {
    "P-not-json": (200, b"<html>age: twelve</html>"),
    "P-list": (200, b"[12]"),
    "P-age-text": (200, b'{"age": "twelve"}'),
    "P-negative": (200, b'{"age": -5}'),
    "P-error": (500, b'{"age": 12}'),
}


def test_an_unavailable_service_denies(
    accord_server: Server, info: PersonInfoServer, engine: Engine
) -> None:
    info.answers.update(MALFORMED)
    info.answers["P-slow"] = (SLOW, b'{"age": 12}')

    started = time.monotonic()
    slow = decide(accord_server, "P-slow")
    elapsed = time.monotonic() - started
    check_audited(engine, slow, "deny", "person-info-unavailable")
    assert elapsed < TIMEOUT + 2, f"the slow case took {elapsed:.2f} s"

    for person_id in MALFORMED:
        check_audited(engine, decide(accord_server, person_id), "deny", "person-info-unavailable")

    # The adult agreement's min_age fails closed the same way.
    adult = decide(accord_server, "P-error", **ADULTS)
    check_audited(engine, adult, "deny", "person-info-unavailable")

    # A batch: every field that the age condition left unchecked is denied.
    fields = ["identity.name", "criminal.convictions", "criminal.intelligence"]
    response = accord_server.post(
        "/v1/decisions/batch",
        json={**CHILDREN, "subject": {"id": "P-negative"}, "fields": fields},
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["permitted"] == []
    expected = {
        "identity.name": "person-info-unavailable",
        "criminal.convictions": "person-info-unavailable",
        "criminal.intelligence": "field-not-covered",
    }
    for answer in batch["decisions"]:
        check_audited(engine, answer, "deny", expected[answer["field"]])

    # Nothing listening on the port at all.
    info.stop()
    check_audited(engine, decide(accord_server, "P-down"), "deny", "person-info-unavailable")
    assert info.calls["P-down"] == 0


NONSENSE = {  # person id: (answer, parties); each answer passes validation today
    "P-bool-age": ({"age": True}, CHILDREN),  # read as age 1: a permit
    "P-ancient": ({"birth_date": "1700-01-01"}, ADULTS),  # age 326: a permit
    "P-unborn": ({"birth_date": "2999-01-01"}, CHILDREN),
    "P-no-age": ({"years": 12}, CHILDREN),
}


def test_a_nonsense_answer_is_unavailable_not_a_fact(
    accord_server: Server, info: PersonInfoServer
) -> None:
    outcomes = {}
    for person_id, (payload, parties) in NONSENSE.items():
        info.answer(person_id, payload)
        answer = decide(accord_server, person_id, **parties)
        outcomes[person_id] = (answer["decision"], answer["reasons"][0]["code"])
    assert outcomes == dict.fromkeys(NONSENSE, ("deny", "person-info-unavailable"))
