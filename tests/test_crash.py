"""kill -9 mid-load: every decision a client received is in the audit table, and the chain holds."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.store.tables import AuditDecision
from tests.conftest import SCENARIO, ProcessServer, Server, accord, scenario_env

REQUESTS = [
    ("la.blackpool.childrens-services", "police.lancashire", "criminal.convictions"),
    ("la.blackpool.childrens-services", "police.lancashire", "criminal.intelligence"),
    ("la.blackpool.adult-services", "nhs.blackpool-hospitals", "health.mental"),
]


def _ask_until_refused(server: Server, received: dict[str, str], stop: threading.Event) -> None:
    with server.client() as client:
        while not stop.is_set():
            requester, holder, field = random.choice(REQUESTS)
            body = {
                "requester": requester,
                "holder": holder,
                "subject": {"id": f"P-{random.randrange(50)}", "attributes": {"age": 12}},
                "field": field,
                "purpose": "safeguarding.children",
            }
            try:
                response = client.post("/v1/decisions", json=body)
            except httpx.TransportError:
                return  # the server is gone
            if response.status_code == 200:
                answer = response.json()
                received[answer["decision_id"]] = answer["decision"]


@pytest.mark.slow
def test_no_answered_decision_is_lost_when_the_server_is_killed(
    database_url: str,
    engine: Engine,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
) -> None:
    env = scenario_env(database_url)
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    received: dict[str, str] = {}
    for _ in range(3):
        server = process_server_factory(env)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_ask_until_refused, args=(server, received, stop))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0.5, 1.5))
        assert server.process is not None
        server.process.kill()  # SIGKILL: no shutdown, no flush
        server.process.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=20)

    assert len(received) > 50
    with Session(engine) as session:
        recorded = dict(
            session.execute(
                select(AuditDecision.decision_id, AuditDecision.decision).where(
                    AuditDecision.decision_id.in_(list(received))
                )
            ).all()
        )
    assert recorded == received, "an answered decision is missing from the audit table"
    verified = accord("audit", "verify", env=env)
    assert verified.stdout.startswith("intact")
