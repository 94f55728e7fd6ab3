"""Health, readiness, request ids and log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from app.store.database import make_engine
from app.store.revisions import REGISTER, read_revision, read_revisions
from tests.conftest import Backend, ProcessServer, Server, free_port, scenario_env


def test_readyz_reports_the_policy_revision(
    database_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    server = server_factory(scenario_env(database_url))
    assert server.get("/healthz", key=None).json() == {"status": "ok"}
    ready = server.get("/readyz", key=None).json()
    with make_engine(database_url).connect() as connection:
        revisions = read_revisions(connection)
        register_seq = read_revision(connection, REGISTER)
    assert ready == {
        "status": "ready",
        "policy_revision": revisions.policy,
        "client_revision": revisions.clients,
        "register_seq": register_seq,
    }


@pytest.mark.slow
def test_without_a_schema_the_service_is_not_ready_and_decides_nothing(backend: Backend) -> None:
    url = backend.new_database()  # no migrations applied
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env={**os.environ, **scenario_env(url)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health.status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        decision = httpx.post(
            f"{base}/v1/decisions",
            headers={"authorization": "Bearer any-key"},
            json={
                "requester": "police.lancashire",
                "holder": "probation.north-west",
                "subject": {"id": "P-1"},
                "field": "identity.name",
                "purpose": "crime-prevention",
            },
        )
        assert decision.status_code == 503
        assert "decision" not in decision.json()
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.slow  # its log lines: a real `accord serve`
def test_each_request_gets_an_id_in_its_answer_and_its_log_line(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    server = process_server_factory(scenario_env(database_url))
    given = httpx.get(f"{server.url}/healthz", headers={"x-request-id": "trace-42"})
    made = httpx.get(f"{server.url}/healthz", headers={"x-request-id": "bad id; drop"})
    assert given.headers["x-request-id"] == "trace-42"
    assert made.headers["x-request-id"] not in ("", "bad id; drop")
    server.stop()
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert any(line["request_id"] == "trace-42" and line["status"] == 200 for line in requests)
    assert any(line["request_id"] == made.headers["x-request-id"] for line in requests)
