"""The database goes away mid-load: no decision without its row, not ready, then recovery alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.store.database import upgrade_schema
from tests.audit_rows import recorded_decision_ids
from tests.conftest import MASH_REQUEST, SCENARIO, accord, scenario_env, start_server, wait_until
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.slow  # a real server through a database outage


def test_a_database_outage_answers_503_then_recovers(tmp_path: Path) -> None:
    postgres = ThrowawayPostgres()  # its own server: the outage must not touch other tests
    postgres.start()
    url = postgres.new_database()
    try:
        upgrade_schema(url)
        env = {**scenario_env(url), "ACCORD_AUDIT_TIMEOUT_SECONDS": "2"}
        accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
        server = start_server(env, tmp_path)
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def ask() -> None:
            with server.client() as client:
                while not stop.is_set():
                    response = client.post("/v1/decisions", json=MASH_REQUEST, timeout=15)
                    body = response.json()
                    answers.append((response.status_code, body.get("decision_id")))

        load = threading.Thread(target=ask)
        load.start()
        try:
            time.sleep(1)
            postgres.pause()
            assert wait_until(lambda: server.get("/readyz").status_code == 503, 10)
            during = server.post("/v1/decisions", json=MASH_REQUEST, timeout=15)
            assert during.status_code == 503
            assert "decision_id" not in during.json()
            search = server.get("/v1/audit/decisions", params={"person": "P-101"}, timeout=15)
            assert search.status_code == 503, search.text
            assert search.headers["content-type"] == "application/problem+json"
            # The scrape still comes, with the audit failures that explain the 503s;
            # only the break-glass gauges, counted in the database, are left out.
            scrape = server.get("/metrics", timeout=15)
            assert scrape.status_code == 200
            assert "accord_audit_commit_failures_total" in scrape.text
            assert "accord_break_glass_reviews_pending" not in scrape.text
            postgres.resume()
            assert wait_until(lambda: server.get("/readyz").status_code == 200, 20)
            assert wait_until(
                lambda: server.post("/v1/decisions", json=MASH_REQUEST).status_code == 200, 20
            )
            time.sleep(1)
        finally:
            stop.set()
            load.join(timeout=30)
            server.stop()

        statuses = {status for status, _ in answers}
        assert statuses <= {200, 503}, statuses
        answered = [decision_id for status, decision_id in answers if status == 200]
        assert 503 in statuses and answered
        recorded = recorded_decision_ids(url, answered)
        assert recorded == set(answered), "a decision was answered without its audit row"
    finally:
        postgres.stop()
