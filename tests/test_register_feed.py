"""The register is data: its changes reach every replica through the change feed within a
second, compiling nothing; a replica that cannot read the feed fails closed."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.policy.lines import FOREVER
from app.policy.register import Consent, Restriction, window_of
from app.register.service import (
    NewEntry,
    add_entry,
    changes_after,
    load_register,
    remove_entry,
)
from app.store.tables import RegisterEntry
from tests.conftest import (
    MASH_REQUEST,
    SCENARIO,
    ProcessServer,
    ServerFactory,
    import_agreements_from,
    scenario_env,
    wait_until,
)
from tests.scenario import scenario_vocabulary

OBJECTION = {
    "id": "r-feed-objection",
    "person": "P-101",
    "kind": "objection",
    "recipients": ["la.blackpool.childrens-services"],
    "reason": "the person objected on the phone",
}


def _compiles(server: ProcessServer) -> float:
    metrics = server.get("/metrics")
    found = re.search(r"^accord_policy_compiles_total (\S+)$", metrics.text, re.MULTILINE)
    assert found, "no accord_policy_compiles_total in /metrics"
    return float(found.group(1))


@pytest.mark.slow
def test_an_entry_written_on_one_replica_changes_the_next_decision_on_another(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env, SCENARIO / "agreements")
    writer, reader = process_server_factory(env), process_server_factory(env)
    compiles = [_compiles(writer), _compiles(reader)]
    assert reader.post("/v1/decisions", json=MASH_REQUEST).json()["decision"] == "permit"

    # decisions keep coming on the reader while the entry is written on the other replica
    answers: list[tuple[float, str]] = []
    stop = threading.Event()

    def keep_deciding() -> None:
        while not stop.is_set():
            response = reader.post("/v1/decisions", json=MASH_REQUEST)
            assert response.status_code == 200, response.text
            answers.append((time.monotonic(), response.json()["decision"]))

    deciding = threading.Thread(target=keep_deciding)
    deciding.start()
    try:
        time.sleep(0.2)
        written = writer.post("/v1/register/restrictions", json=OBJECTION)
        written_at = time.monotonic()
        assert written.status_code == 201, written.text
        assert wait_until(lambda: bool(answers) and answers[-1][1] == "deny", 2.0)
    finally:
        stop.set()
        deciding.join()
    first_deny = next(at for at, decision in answers if decision == "deny")
    assert first_deny - written_at < 1.0, f"took {first_deny - written_at:.2f} s"
    assert all(decision == "deny" for at, decision in answers if at > first_deny)
    # the writer applies its own write before it answers
    assert writer.post("/v1/decisions", json=MASH_REQUEST).json()["decision"] == "deny"
    assert [_compiles(writer), _compiles(reader)] == compiles, "a register change compiled"


def test_a_replica_that_cannot_read_the_feed_answers_503_and_is_not_ready(
    database_url: str, engine: Engine, server_factory: ServerFactory
) -> None:
    env = {
        **scenario_env(database_url),
        "ACCORD_REGISTER_MAX_LAG_SECONDS": "1",
        "ACCORD_POLICY_POLL_SECONDS": "0.1",
    }
    import_agreements_from(env, SCENARIO / "agreements")
    server = server_factory(env)
    assert server.post("/v1/decisions", json=MASH_REQUEST).json()["decision"] == "permit"
    assert server.get("/readyz").status_code == 200

    with engine.begin() as connection:  # the feed is gone: the view can no longer be confirmed
        connection.execute(text("ALTER TABLE register_changes RENAME TO register_changes_away"))
    try:
        answers: list[Any] = []

        def refused() -> bool:
            response = server.post("/v1/decisions", json=MASH_REQUEST)
            answers.append(response)
            return response.status_code == 503

        assert wait_until(refused, 3.0), "decisions went on with a register view out of date"
        problem = answers[-1].json()
        assert answers[-1].headers["content-type"] == "application/problem+json"
        assert "register" in problem["detail"]
        assert all(
            answer.status_code == 503 or answer.json()["decision"] == "permit" for answer in answers
        )
        every_field = {key: value for key, value in MASH_REQUEST.items() if key != "field"}
        batch = server.post("/v1/decisions/batch", json={**every_field, "fields": "*"})
        assert batch.status_code == 503, batch.text
        not_ready = server.get("/readyz")
        assert not_ready.status_code == 503 and "register" in not_ready.json()["detail"]
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE register_changes_away RENAME TO register_changes"))
    assert wait_until(lambda: server.get("/readyz").status_code == 200, 3.0)
    assert server.post("/v1/decisions", json=MASH_REQUEST).json()["decision"] == "permit"


def test_a_replica_reads_each_entry_at_start_as_the_feed_hands_it_over(engine: Engine) -> None:
    """The bulk load and the feed give the same entries, on both backends, with the times
    the database makes as text equal to Python's (casbin_time): to the second, in UTC,
    whatever the offset given. A removed entry comes from the feed as None."""
    vocabulary = scenario_vocabulary()
    ends = [
        None,
        datetime(2030, 5, 6, 7, 8, 9, 999_999, tzinfo=UTC),
        datetime(2031, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # 2030-12-31 23:30Z
        datetime(2032, 2, 29, tzinfo=UTC),
    ]
    with Session(engine) as session:
        for n, until in enumerate(ends):
            kind = ("sealed", "objection", "consent")[n % 3]
            entry = NewEntry(
                f"{kind}-{n}", f"P-{n % 2}", kind, None, ["contact.address"] if n else None,
                None, "recorded by the test", until,
            )  # fmt: skip
            if kind == "sealed" and entry.fields is None:
                entry = dataclasses.replace(entry, fields=["contact"])
            add_entry(session, entry=entry, vocabulary=vocabulary, actor="test")
        session.commit()
        loaded = load_register(session)
        fed = {entry_id: entry for _, entry_id, entry in changes_after(session, 0)}
        rows = session.scalars(select(RegisterEntry)).all()
    listed: list[Restriction | Consent] = []
    for _, entries in loaded.by_person.items():
        listed += [*entries.restrictions, *entries.consents]
    by_id = {entry.id: entry for entry in listed}
    assert by_id == fed and len(fed) == len(ends)
    assert dict(loaded.person_of.items()) == {row.id: row.person_id for row in rows}
    assert {entry_id: entry.window for entry_id, entry in by_id.items()} == {
        row.id: window_of(row.recorded_at, row.until) for row in rows
    }
    assert by_id["consent-2"].window[1] == "2030-12-31T23:30:00Z"
    assert by_id["objection-1"].window[1] == "2030-05-06T07:08:09Z"
    assert by_id["sealed-0"].window[1] == FOREVER
    with Session(engine) as session:
        remove_entry(session, entry_id="sealed-3", actor="test")
        session.commit()
        assert changes_after(session, len(ends)) == [(len(ends) + 1, "sealed-3", None)]
