"""The partner client (`accord_client`, in `clients/python/`) against a real `accord serve`, on
both backends.

Answers are compared with the raw API's; retries are counted at real servers on
loopback: one that answers every request with an error status, one that hangs
up before answering, and a port where nothing listens yet.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import accord_client
import orjson
import pytest
from accord_client import (
    AccordClient,
    AccordError,
    AccordUnreachable,
    AsyncAccordClient,
    Decision,
    Forbidden,
    InvalidRequest,
    RequestTooLarge,
    Unauthenticated,
    Unavailable,
)
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.decision import router as decision_router
from app.decision import schemas
from app.store.tables import AuditDecision
from app.web.problems import InvalidParam
from tests.conftest import (
    REPO,
    SAMPLE_VOCABULARY,
    SCENARIO,
    ProcessServer,
    ScenarioService,
    accord,
    create_key,
    jsonable,
    load_yaml,
    scenario_env,
    wait_until,
)

SCENARIO_CASES = load_yaml(SCENARIO / "cases.yaml")
DECISION_CASES = [case for case in SCENARIO_CASES["cases"] if "status" not in case["expect"]]
BATCH = SCENARIO_CASES["batches"][0]
# What differs between two askings of the same question.
PER_CALL = ("decision_id", "decided_at", "policy_revision")


@pytest.fixture(scope="module")
def scenario_service(scenario_process_service: ScenarioService) -> ScenarioService:
    """The client library opens its own connections: the scenario behind a real `accord serve`."""
    return scenario_process_service


def _question(request: dict[str, Any]) -> dict[str, Any]:
    """A scenario request as the client's keyword arguments."""
    subject = request["subject"]
    return {
        "requester": request["requester"],
        "holder": request["holder"],
        "person": subject["id"],
        "purpose": request["purpose"],
        **subject.get("attributes", {}),
        **request.get("context", {}),
    }


def _raw_body(request: dict[str, Any]) -> dict[str, Any]:
    body = {key: jsonable(value) for key, value in request.items()}
    body.setdefault("context", {})
    return body


def _same_question(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what changes from one asking to the next."""
    return {key: value for key, value in answer.items() if key not in PER_CALL}


def _client_answer(decision: Decision) -> dict[str, Any]:
    return _same_question(decision.model_dump(mode="json"))


def _in_audit(service: ScenarioService, decision_id: str | None) -> AuditDecision:
    with Session(service.engine) as session:
        return session.scalars(
            select(AuditDecision).where(AuditDecision.decision_id == decision_id)
        ).one()


def _no_secret_in(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
        assert secret.removeprefix("acc_") not in text


def _error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


# -- Same answers as the raw API -------------------------------------------------


@pytest.mark.slow
def test_sync_and_async_decide_answer_as_the_raw_api(scenario_service: ScenarioService) -> None:
    server = scenario_service.server

    async def ask_async() -> list[Decision]:
        async with AsyncAccordClient(server.url, server.key) as client:
            return [
                await client.decide(field=case["request"]["field"], **_question(case["request"]))
                for case in DECISION_CASES
            ]

    with AccordClient(server.url, server.key) as client:
        sync_answers = [
            client.decide(field=case["request"]["field"], **_question(case["request"]))
            for case in DECISION_CASES
        ]
    async_answers = asyncio.run(ask_async())

    for case, by_sync, by_async in zip(DECISION_CASES, sync_answers, async_answers, strict=True):
        raw = server.post("/v1/decisions", json=_raw_body(case["request"]))
        assert raw.status_code == 200, raw.text
        expected = _same_question(raw.json())
        assert _client_answer(by_sync) == expected, case["name"]
        assert _client_answer(by_async) == expected, case["name"]
        assert by_sync.decision == case["expect"]["decision"]
        assert by_sync.reason.code == case["expect"]["reason"]
        assert by_sync.is_permit is (case["expect"]["decision"] == "permit")
        # Each asking is its own decision, recorded before it was answered.
        ids = {by_sync.decision_id, by_async.decision_id, raw.json()["decision_id"]}
        assert len(ids) == 3
        for decision in (by_sync, by_async):
            row = _in_audit(scenario_service, decision.decision_id)
            assert (row.field, row.decision) == (decision.field, decision.decision)
            assert row.client == server.client_id


@pytest.mark.slow
def test_allowed_fields_are_the_batch_permits(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    request = BATCH["request"]
    expected = frozenset(BATCH["expect"]["permitted"])
    raw = server.post("/v1/decisions/batch", json=_raw_body(request))
    assert raw.status_code == 200, raw.text
    assert frozenset(raw.json()["permitted"]) == expected
    # A record screen's own list: some permitted, some not.
    screen = ["identity.name", "criminal.intelligence", "contact.address", "health.sexual"]

    async def ask_async() -> tuple[frozenset[str], frozenset[str]]:
        async with AsyncAccordClient(server.url, server.key) as client:
            every = await client.allowed_fields(fields="*", **_question(request))
            listed = await client.allowed_fields(fields=screen, **_question(request))
            return every, listed

    with AccordClient(server.url, server.key) as client:
        batch = client.decide_batch(fields="*", **_question(request))
        assert client.allowed_fields(fields="*", **_question(request)) == expected
        listed = client.allowed_fields(fields=screen, **_question(request))
    assert listed == {"identity.name", "contact.address"}
    assert asyncio.run(ask_async()) == (expected, listed)

    assert batch.simulation is False
    assert list(batch.permitted) == raw.json()["permitted"]
    assert [_client_answer(d) for d in batch.decisions] == [
        _same_question(d) for d in raw.json()["decisions"]
    ]
    assert batch.allowed() == expected


@pytest.mark.slow
def test_simulate_records_nothing(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    with AccordClient(server.url, server.key) as client:
        simulated = client.simulate(fields="*", **_question(BATCH["request"]))
    assert simulated.simulation is True
    assert simulated.allowed() == frozenset(BATCH["expect"]["permitted"])
    assert {d.decision_id for d in simulated.decisions} == {None}


def test_the_client_mirrors_the_served_schemas() -> None:
    pairs: list[tuple[type[BaseModel], type[BaseModel]]] = [
        (accord_client.Decision, schemas.DecisionOut),
        (accord_client.BatchDecision, decision_router.SimulationOut),
        (accord_client.Reason, schemas.Reason),
        (accord_client.Obligation, schemas.ObligationOut),
        (accord_client.InvalidParam, InvalidParam),
    ]
    for ours, served in pairs:
        assert set(ours.model_fields) == set(served.model_fields), ours.__name__
    question = set(accord_client.Question.__annotations__)
    assert question == {"requester", "holder", "person", "purpose"} | set(
        schemas.SubjectAttributes.model_fields
    ) | set(schemas.RequestContext.model_fields)


def test_the_client_imports_nothing_of_the_server(tmp_path: Path) -> None:
    """The `accord-client` distribution stands alone: imported from `clients/python/`, it
    pulls in no server module."""
    package = REPO / "clients" / "python"
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(package)!r})\n"
        "import accord_client\n"
        f"assert accord_client.__file__.startswith({str(package)!r}), accord_client.__file__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('app', 'fastapi', 'starlette', 'sqlalchemy', 'casbin', 'structlog', 'uvicorn')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# -- Errors from problem+json ----------------------------------------------------


@pytest.mark.slow
def test_a_bad_part_raises_invalid_request_naming_it(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    question = _question(DECISION_CASES[0]["request"])
    with AccordClient(server.url, server.key) as client:
        with pytest.raises(InvalidRequest) as unknown_field:
            client.decide(**{**question, "field": "criminal.shoe-size"})
        with pytest.raises(InvalidRequest) as unknown_in_batch:
            client.allowed_fields(fields=["identity.name", "criminal.shoe-size"], **question)
        with pytest.raises(InvalidRequest) as bad_age:
            client.decide(field="identity.name", **{**question, "age": -1})
    error = unknown_field.value
    assert isinstance(error, AccordError)
    assert (error.status, error.title) == (422, "Invalid request")
    assert [p.name for p in error.invalid_params] == ["field"]
    assert "criminal.shoe-size" in error.detail and "criminal.shoe-size" in str(error)
    assert error.problem["invalid_params"][0]["name"] == "field"
    assert error.request_id
    assert [p.name for p in unknown_in_batch.value.invalid_params] == ["fields"]
    assert [p.name for p in bad_age.value.invalid_params] == ["subject.attributes.age"]


@pytest.mark.slow
def test_an_unknown_key_raises_unauthenticated(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    unknown = "acc_" + secrets.token_urlsafe(32)
    question = _question(DECISION_CASES[0]["request"])

    async def ask_async() -> None:
        async with AsyncAccordClient(server.url, unknown) as client:
            await client.decide(field="identity.name", **question)

    with AccordClient(server.url, unknown) as client, pytest.raises(Unauthenticated) as refused:
        client.decide(field="identity.name", **question)
    with pytest.raises(Unauthenticated) as refused_async:
        asyncio.run(ask_async())
    for error in (refused.value, refused_async.value):
        assert error.status == 401
        _no_secret_in(unknown, *_error_texts(error))


@pytest.mark.slow
def test_deciding_for_another_agency_raises_forbidden(scenario_service: ScenarioService) -> None:
    server = scenario_service.server
    key = create_key(
        scenario_env(scenario_service.database_url),
        "t-client-police",
        scopes="decide",
        agencies="police.lancashire",
    )
    assert wait_until(lambda: server.get("/v1/vocabulary", key=key).is_success, 5)
    mine = _question(DECISION_CASES[0]["request"])  # children's services ask the police
    assert mine["holder"] == "police.lancashire"
    others = {**mine, "holder": "nhs.lancashire-mental-health"}
    with AccordClient(server.url, key) as client:
        assert client.decide(field="criminal.convictions", **mine).is_permit
        with pytest.raises(Forbidden) as refused:
            client.decide(field="health.mental", **others)
        with pytest.raises(Forbidden):
            client.allowed_fields(fields=["health.mental"], **others)
    assert refused.value.status == 403
    assert "t-client-police" in refused.value.detail
    _no_secret_in(key, *_error_texts(refused.value), repr(client))


# -- Retries: never on a status, only on connection failures ---------------------


class CountingServer:
    """A real HTTP server on loopback that answers every request with one error status."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        self.hits: list[str | None] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                hits.append(self.headers.get("authorization"))
                payload = orjson.dumps(body) if body is not None else b"<html>bad gateway</html>"
                self.send_response(status)
                kind = "application/problem+json" if body is not None else "text/html"
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(payload)))
                self.send_header("x-request-id", "counted-1")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


ERROR_STATUSES = [
    (400, InvalidRequest),
    (401, Unauthenticated),
    (403, Forbidden),
    (413, RequestTooLarge),
    (422, InvalidRequest),
    (409, AccordError),
    (500, AccordError),
    (502, Unavailable),
    (503, Unavailable),
]


@pytest.mark.parametrize(
    ("status", "error"), ERROR_STATUSES, ids=[str(s) for s, _ in ERROR_STATUSES]
)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_no_status_is_ever_retried(status: int, error: type[AccordError], flavour: str) -> None:
    problem = {
        "type": "about:blank",
        "title": "Audit unavailable: no decision was made",
        "status": status,
        "detail": "the audit record could not be committed",
        "retry_after_seconds": 2,
    }
    server = CountingServer(status, problem)
    key = "acc_" + secrets.token_urlsafe(32)
    question = _question(DECISION_CASES[0]["request"])
    try:
        if flavour == "sync":
            with (
                AccordClient(server.url, key, retries=3, backoff=0) as client,
                pytest.raises(AccordError) as raised,
            ):
                client.decide(field="identity.name", **question)
        else:

            async def ask() -> None:
                async with AsyncAccordClient(server.url, key, retries=3, backoff=0) as client:
                    await client.decide(field="identity.name", **question)

            with pytest.raises(AccordError) as raised:
                asyncio.run(ask())
    finally:
        server.stop()
    assert server.hits == [f"Bearer {key}"]  # exactly one request, carrying the key
    assert type(raised.value) is error
    assert raised.value.status == status
    assert raised.value.title == problem["title"]
    assert raised.value.detail == problem["detail"]
    assert raised.value.problem["retry_after_seconds"] == 2
    assert raised.value.request_id == "counted-1"
    _no_secret_in(key, *_error_texts(raised.value))


def test_an_error_that_is_not_a_problem_is_still_an_error() -> None:
    server = CountingServer(502, None)
    try:
        with (
            AccordClient(server.url, "k", retries=3, backoff=0) as client,
            pytest.raises(Unavailable) as raised,
        ):
            client.allowed_fields(fields=["identity.name"], **_question(BATCH["request"]))
    finally:
        server.stop()
    assert len(server.hits) == 1
    assert (raised.value.status, raised.value.title) == (502, "Bad Gateway")
    assert "bad gateway" in raised.value.detail


class HangingUpServer:
    """Reads each request in full, then closes the connection without answering."""

    def __init__(self) -> None:
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.connections += 1
                received = b""
                while b"\r\n\r\n" not in received:
                    received += connection.recv(65536)
                head, _, body = received.partition(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])  # type: ignore[index]
                while len(body) < length:
                    body += connection.recv(65536)

    def stop(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_hang_up_before_the_answer_is_retried_then_unreachable(flavour: str) -> None:
    server = HangingUpServer()
    question = _question(DECISION_CASES[0]["request"])
    try:
        if flavour == "sync":
            with (
                AccordClient(server.url, "k", retries=2, backoff=0.01) as client,
                pytest.raises(AccordUnreachable) as raised,
            ):
                client.decide(field="identity.name", **question)
        else:

            async def ask() -> None:
                async with AsyncAccordClient(server.url, "k", retries=2, backoff=0.01) as client:
                    await client.decide(field="identity.name", **question)

            with pytest.raises(AccordUnreachable) as raised:
                asyncio.run(ask())
    finally:
        server.stop()
    assert server.connections == 3  # retries + 1
    assert raised.value.attempts == 3
    assert raised.value.status is None
    assert "RemoteProtocolError" in raised.value.detail


@pytest.fixture
def closed_port() -> Iterator[socket.socket]:
    """A port bound but not listening: every connection to it is refused."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield holder
    holder.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_connection_refused_is_retried_then_unreachable(
    closed_port: socket.socket, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port.getsockname()[1]}"
    key = "acc_" + secrets.token_urlsafe(32)
    question = _question(DECISION_CASES[0]["request"])
    caplog.set_level(logging.WARNING, logger="accord.client")
    started = time.monotonic()
    if flavour == "sync":
        with (
            AccordClient(url, key, retries=3, backoff=0.02) as client,
            pytest.raises(AccordUnreachable) as raised,
        ):
            client.decide(field="identity.name", **question)
    else:

        async def ask() -> None:
            async with AsyncAccordClient(url, key, retries=3, backoff=0.02) as client:
                await client.decide(field="identity.name", **question)

        with pytest.raises(AccordUnreachable) as raised:
            asyncio.run(ask())
    assert time.monotonic() - started >= 0.02 + 0.04 + 0.08  # the backoff, doubling
    assert raised.value.attempts == 4
    assert "ConnectError" in str(raised.value) and url in str(raised.value)
    retries = [r for r in caplog.records if r.name == "accord.client"]
    assert [r.getMessage().count("(attempt ") for r in retries] == [1, 1, 1]
    _no_secret_in(key, *_error_texts(raised.value), caplog.text)


class Forwarder:
    """Relays TCP connections from a socket to a real server, once told to listen."""

    def __init__(self, sock: socket.socket, upstream_port: int) -> None:
        self.sock = sock
        self.upstream_port = upstream_port

    def listen(self) -> None:
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class ListenOnFirstRetry(logging.Handler):
    """Brings the server up while the client waits to retry: deterministic, no race."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.retries += 1
        if self.retries == 1:
            self.forwarder.listen()


@pytest.mark.slow
def test_a_server_coming_up_during_the_retries_answers(
    scenario_service: ScenarioService, closed_port: socket.socket
) -> None:
    server = scenario_service.server
    assert isinstance(server, ProcessServer)
    url = f"http://127.0.0.1:{closed_port.getsockname()[1]}"
    case = DECISION_CASES[0]
    handler = ListenOnFirstRetry(Forwarder(closed_port, server.port))
    logger = logging.getLogger("accord.client")
    logger.addHandler(handler)
    try:
        with AccordClient(url, server.key, retries=5, backoff=0.05) as client:
            decision = client.decide(field=case["request"]["field"], **_question(case["request"]))
    finally:
        logger.removeHandler(handler)
    assert handler.retries == 1  # refused once, answered on the second attempt
    assert (decision.decision, decision.reason.code) == ("permit", case["expect"]["reason"])
    assert _in_audit(scenario_service, decision.decision_id).client == server.client_id


def test_the_key_is_never_shown() -> None:
    key = "acc_" + secrets.token_urlsafe(32)
    sync_client = AccordClient("http://127.0.0.1:9", key)
    async_client = AsyncAccordClient("http://127.0.0.1:9", key)
    try:
        texts = [repr(sync_client), str(sync_client), repr(async_client), str(vars(sync_client))]
        _no_secret_in(key, *texts)
        assert repr(sync_client) == "AccordClient(base_url='http://127.0.0.1:9', retries=2)"
        with pytest.raises(ValueError) as refused:
            AccordClient("http://127.0.0.1:9", f"{key} trailing")
        _no_secret_in(key, *_error_texts(refused.value))
    finally:
        sync_client.close()
        asyncio.run(async_client.aclose())


def test_fields_must_be_a_list_or_star() -> None:
    with AccordClient("http://127.0.0.1:9", "k") as client, pytest.raises(TypeError):
        client.allowed_fields(fields="identity.name", **_question(BATCH["request"]))


# -- The README's example ---------------------------------------------------------

README_HEADING = "## Partner systems: the Python client"


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split(README_HEADING, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under the heading"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_example_runs_against_the_sample_policies(
    database_url: str,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
    tmp_path: Path,
) -> None:
    env = {"ACCORD_DATABASE_URL": database_url, "ACCORD_VOCABULARY_FILE": str(SAMPLE_VOCABULARY)}
    accord("agreements", "import", str(REPO / "policies" / "agreements"), env=env)
    key_file = tmp_path / "partner.key"
    key_file.write_text(
        create_key(
            env,
            "riverton-childrens-case-system",
            scopes="decide",
            agencies="la.riverton.childrens-services",
        )
    )
    server = process_server_factory(env)

    code = _readme_example()
    for placeholder in ('"http://127.0.0.1:8000"', '"var/demo.key"'):
        assert code.count(placeholder) == 1, placeholder
    code = code.replace('"http://127.0.0.1:8000"', repr(server.url))
    code = code.replace('"var/demo.key"', repr(str(key_file)))
    printed = io.StringIO()
    with redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102 - the repo's own README
    shown_in_readme = code.rstrip().splitlines()[-1].split("# ", 1)[1]
    assert printed.getvalue().strip() == shown_in_readme
    assert "criminal.convictions" in shown_in_readme


@pytest.mark.slow
def test_why_not_gives_the_lawful_routes_and_allowed_fields_still_fails_closed(
    scenario_service: ScenarioService,
) -> None:
    server = scenario_service.server
    question: dict[str, Any] = {
        "requester": "la.blackpool.early-help",
        "holder": "edu.blackpool-schools",
        "person": "P-CLIENT-1",
        "purpose": "early-help",
    }
    with AccordClient(server.url, server.key) as client:
        routes = client.why_not(field="education.attendance", **question)
        shown = client.allowed_fields(fields=["education.attendance"], **question)
        permitted = client.why_not(field="education.attendance", **{**question, "person": "P-301"})
    assert [(r.kind, r.agreement_id) for r in routes] == [("consent", "isa-early-help")]
    assert shown == frozenset(), "a route is not a permission"
    assert permitted == ()  # P-301 has consented: permitted, so no route

    async def ask_async() -> tuple[Any, ...]:
        async with AsyncAccordClient(server.url, server.key) as client:
            return await client.why_not(field="education.attendance", **question)

    assert asyncio.run(ask_async()) == routes
