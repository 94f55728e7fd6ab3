"""The audit stream for SIEMs (GET /v1/audit/stream) and `accord audit tail`, against a real
`accord serve`: chunked NDJSON in seq order that stays open, resumes from any seq, delivers
every row at least once while decisions are being made, and ends cleanly when the server
stops."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from app.audit import stream
from app.store.tables import AuditDecision
from tests.conftest import (
    MASH_REQUEST,
    REPO,
    ProcessServer,
    ScenarioService,
    Server,
    scenario_env,
)

STREAM = "/v1/audit/stream"
LOAD_REQUESTS = 300
FIELDS = ("criminal.convictions", "identity.name", "health.mental", "education.attendance")


def _table_seqs(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(AuditDecision.seq).order_by(AuditDecision.seq)))


def _last_seq(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.max(AuditDecision.seq))) or 0)


@contextmanager
def _stream(server: Server, after: int) -> Iterator[Iterator[dict[str, Any] | None]]:
    """The stream from `after`, as a consumer reads it: each row, None for a keep-alive.
    Leaving the block closes the connection, read to the end or not."""
    timeout = httpx.Timeout(10, read=stream.KEEPALIVE_SECONDS + 15)
    with (
        httpx.Client(base_url=server.url, timeout=timeout) as client,
        client.stream(
            "GET",
            STREAM,
            params={"after": after},
            headers={"authorization": f"Bearer {server.key}"},
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-accel-buffering"] == "no"  # nginx passes lines on at once
        yield (json.loads(line) if line else None for line in response.iter_lines())


def _decide(api: httpx.Client, number: int) -> list[str]:
    """One decision (every fifth a batch of every field) for a person of its own."""
    body: dict[str, Any] = {**MASH_REQUEST, "subject": {"id": f"P-STREAM-{number}"}}
    body["subject"]["attributes"] = {"age": 12}
    if number % 5 == 0:
        body.pop("field")
        answer = api.post("/v1/decisions/batch", json={**body, "fields": list(FIELDS)})
    else:
        answer = api.post("/v1/decisions", json={**body, "field": FIELDS[number % 4]})
    assert answer.status_code == 200, answer.text
    return [d["decision_id"] for d in answer.json().get("decisions", [answer.json()])]


@dataclass
class Load:
    """A thread making LOAD_REQUESTS decisions through the API, a little apart."""

    server: Server
    decision_ids: list[str] = field(default_factory=list)
    failure: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        def run() -> None:
            try:
                with self.server.client() as api:
                    for number in range(LOAD_REQUESTS):
                        self.decision_ids += _decide(api, number)
                        time.sleep(0.01)
            except BaseException as exc:
                self.failure = exc

        self.thread = threading.Thread(target=run, name="decision-load")
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the load did not finish"
        assert self.failure is None, repr(self.failure)


def _read(
    server: Server, after: int, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """One connection's rows from `after`, checked to come in seq order, until what it
    has read meets `until`: then the connection is closed, mid-stream."""
    received: list[dict[str, Any]] = []
    with _stream(server, after) as rows:
        for row in rows:
            if row is None:  # a keep-alive
                continue
            assert row["seq"] > (received[-1]["seq"] if received else after), "out of order"
            received.append(row)
            if until(received):
                break
    return received


def test_a_consumer_killed_mid_stream_resumes_and_holds_every_row_once(
    scenario_process_service: ScenarioService,
) -> None:
    service = scenario_process_service
    server, engine = service.server, service.engine
    load = Load(server)
    received: list[dict[str, Any]] = []
    killed_during_load = 0
    after = 0
    load.start()
    # Three connections killed mid-stream while the load runs, each after 60 rows; the
    # second resumes 10 rows back, as a consumer that lost rows it had not stored yet
    # (those come twice)...
    for back in (0, 10, 0):
        received += _read(server, after, lambda rows: len(rows) == 60)
        killed_during_load += load.running
        after = received[-1]["seq"] - back
    # ...then one that reads on until it holds every row committed by the end of the load.
    load.join()
    last = _last_seq(engine)
    received += _read(server, after, lambda rows: rows[-1]["seq"] >= last)

    assert killed_during_load >= 1, "the load ended before a consumer was killed"
    by_seq: dict[int, dict[str, Any]] = {}
    for row in received:
        assert by_seq.setdefault(row["seq"], row) == row, "one seq, two different rows"
    assert len(received) >= len(by_seq) + 10, "the consumer that stepped back saw rows twice"
    assert list(by_seq) == sorted(by_seq), "de-duplicated, the rows are in seq order"
    assert list(by_seq) == _table_seqs(engine), "every row of the table, exactly once"
    decision_ids = [row["decision_id"] for row in by_seq.values()]
    assert len(decision_ids) == len(set(decision_ids))
    assert set(load.decision_ids) <= set(decision_ids)
    assert len(load.decision_ids) == LOAD_REQUESTS + 3 * (LOAD_REQUESTS // 5)
    # Each line is the row as the audit search API gives it.
    for row in (by_seq[min(by_seq)], by_seq[max(by_seq)]):
        assert server.get(f"/v1/audit/decisions/{row['decision_id']}").json() == row


def test_the_stream_stays_open_and_delivers_a_row_made_after_it_opened(
    scenario_process_service: ScenarioService,
) -> None:
    service = scenario_process_service
    server = service.server
    after = _last_seq(service.engine)
    with _stream(server, after) as rows:
        time.sleep(2 * stream.POLL_SECONDS)  # caught up, and still open
        with server.client() as api:
            [decision_id] = _decide(api, 1)
        row = next(row for row in rows if row is not None)
        assert row["decision_id"] == decision_id
        assert row["seq"] > after


@pytest.mark.slow  # waits out a keep-alive interval
def test_a_quiet_stream_sends_an_empty_keepalive_line(
    scenario_process_service: ScenarioService,
) -> None:
    service = scenario_process_service
    started = time.monotonic()
    with _stream(service.server, _last_seq(service.engine)) as rows:
        assert next(rows) is None
    waited = time.monotonic() - started
    assert stream.KEEPALIVE_SECONDS - 1 <= waited <= stream.KEEPALIVE_SECONDS + 5


@pytest.mark.parametrize("after", ["-1", "1.5", "abc", str(2**63)])
def test_a_bad_after_is_refused_as_a_problem(
    scenario_process_service: ScenarioService, after: str
) -> None:
    response = scenario_process_service.server.get(STREAM, params={"after": after})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "after" in response.text


def test_the_stream_ends_cleanly_when_the_server_stops(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    server = process_server_factory(scenario_env(database_url))
    assert server.process is not None
    with _stream(server, 0) as rows:
        time.sleep(2 * stream.POLL_SECONDS)
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert list(rows) == []  # the body ends, whole: no error mid-chunk
        ended = time.monotonic() - stopped
    assert ended < 5, f"the stream held the shutdown for {ended:.1f} s"
    assert server.process.wait(timeout=30) == 0
    assert "timeout graceful shutdown exceeded" not in server.logs()


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, read on a thread of their own."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_accord_audit_tail_prints_rows_after_a_seq_and_follows(
    scenario_process_service: ScenarioService,
) -> None:
    service = scenario_process_service
    server = service.server
    with server.client() as api:
        for number in range(3):
            _decide(api, number)
    seqs = _table_seqs(service.engine)
    after = seqs[-3]
    tail = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "audit", "tail", "--after", str(after)],
        env={**os.environ, **server.env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(tail)
        printed = [json.loads(lines.get(timeout=30)) for _ in seqs[-2:]]
        assert [row["seq"] for row in printed] == seqs[-2:]
        with server.client() as api:
            [decision_id] = _decide(api, 1)
        followed = json.loads(lines.get(timeout=30))
        assert followed["decision_id"] == decision_id
        assert followed["seq"] > seqs[-1]
        # The same line as the stream's.
        with _stream(server, seqs[-1]) as rows:
            assert next(row for row in rows if row is not None) == followed
        tail.send_signal(signal.SIGINT)  # Ctrl-C
        _, errors = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0
    assert errors == ""


@pytest.mark.parametrize("after", ["-5", "1.5", str(2**63)])
def test_accord_audit_tail_refuses_a_bad_seq(
    scenario_process_service: ScenarioService, after: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "tail", f"--after={after}"],
        env={**os.environ, **scenario_process_service.server.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"'{after}' is not a seq" in result.stderr
