"""No decision without its record: failed or stalled audit writes answer 503, never a decision."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import structlog.testing
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from app.audit import writer as writer_module
from app.audit.record import AuditRecord
from app.audit.writer import AuditWriter
from app.errors import AuditUnavailable
from app.store.tables import AuditDecision
from tests.conftest import (
    AUDIT_SIGNER,
    MASH_REQUEST,
    Server,
    import_agreements_from,
    scenario_env,
)


def _rows(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)


def _record() -> AuditRecord:
    return AuditRecord(
        decision_id=str(uuid.uuid4()),
        request_id="r",
        decided_at=datetime.now(UTC),
        client="test",
        requester="a",
        holder="b",
        person_id="P-1",
        field="f",
        purpose="p",
        decision="deny",
        reason="no-agreement",
        agreement_id=None,
        agreement_version=None,
        restriction_id=None,
        consent_id=None,
        break_glass=False,
        justification=None,
        user_ref=None,
        case_ref=None,
        policy_revision=1,
        obligations=[],
        routes_offered=[],
    )


@pytest.fixture
def scenario_server(
    database_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> Server:
    env = {**scenario_env(database_url), "ACCORD_AUDIT_TIMEOUT_SECONDS": "1"}
    import_agreements_from(env)
    return server_factory(env)


def test_a_failed_audit_write_answers_503_and_no_decision(
    scenario_server: Server, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_decisions RENAME TO audit_decisions_away"))
    try:
        for path, body in (
            ("/v1/decisions", MASH_REQUEST),
            (
                "/v1/decisions/batch",
                {**{k: v for k, v in MASH_REQUEST.items() if k != "field"}, "fields": "*"},
            ),
        ):
            response = scenario_server.post(path, json=body)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            answer = response.json()
            assert "decision" not in answer and "decisions" not in answer
            assert "permit" not in response.text
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_decisions_away RENAME TO audit_decisions"))
    assert _rows(engine) == 0

    response = scenario_server.post("/v1/decisions", json=MASH_REQUEST)
    assert response.status_code == 200
    assert _rows(engine) == 1


@contextlib.contextmanager
def _audit_table_locked(engine: Engine) -> Iterator[None]:
    """Hold a lock that blocks every insert into the audit table until the block ends."""
    if engine.dialect.name == "sqlite":
        holder = sqlite3.connect(str(engine.url.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with engine.connect() as connection:
        connection.execute(text("LOCK TABLE audit_decisions IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()


def test_a_stalled_audit_write_answers_503_within_the_timeout(
    scenario_server: Server, engine: Engine
) -> None:
    with _audit_table_locked(engine):
        response = scenario_server.post("/v1/decisions", json=MASH_REQUEST, timeout=20)
        assert response.status_code == 503
        assert "decision_id" not in response.json()
    response = scenario_server.post("/v1/decisions", json=MASH_REQUEST, timeout=20)
    assert response.status_code == 200


def test_concurrent_decisions_share_commits(engine: Engine) -> None:
    writer = AuditWriter(engine, signer=AUDIT_SIGNER, max_batch_rows=1000, timeout_seconds=30)
    writer.start()
    records = [_record() for _ in range(300)]

    async def write_all() -> None:
        await asyncio.gather(*(writer.write([record.model_dump()]) for record in records))

    try:
        asyncio.run(write_all())
    finally:
        writer.stop()
    assert _rows(engine) == 300
    assert writer.commits < 300 / 3, f"{writer.commits} commits for 300 decisions"


def test_a_writer_without_its_table_refuses_every_write(
    backend_engine_without_schema: Engine,
) -> None:
    writer = AuditWriter(
        backend_engine_without_schema, signer=AUDIT_SIGNER, max_batch_rows=10, timeout_seconds=10
    )
    writer.start()
    try:
        with pytest.raises(AuditUnavailable):
            asyncio.run(writer.write([_record().model_dump()]))
    finally:
        writer.stop()


@pytest.mark.parametrize("bad", ["a decision id recorded already", "a NUL in user_ref"])
def test_one_bad_row_in_a_group_commit_fails_alone(
    engine: Engine, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the database refuses fails its own request; the others in its group commit are
    retried and recorded, and the error log carries no row's values."""
    if bad == "a NUL in user_ref" and engine.dialect.name == "sqlite":
        pytest.skip("SQLite stores NUL; PostgreSQL's text refuses it")
    writer = AuditWriter(engine, signer=AUDIT_SIGNER, max_batch_rows=1000, timeout_seconds=30)
    writer.start()
    recorded = _record()
    good = [_record() for _ in range(60)]
    poisoned = (
        recorded.model_copy(update={"request_id": "again"})
        if bad.startswith("a decision id")
        else _record().model_copy(update={"user_ref": "sw.secret-name\x00"})
    )

    async def write_all() -> list[BaseException | None]:
        await writer.write([recorded.model_dump()])
        return await asyncio.gather(
            *(writer.write([record.model_dump()]) for record in [*good[:30], poisoned, *good[30:]]),
            return_exceptions=True,
        )

    captured = structlog.testing.CapturingLogger()
    monkeypatch.setattr(writer_module, "log", structlog.wrap_logger(captured, processors=[]))
    try:
        outcomes = asyncio.run(write_all())
    finally:
        writer.stop()
    assert [isinstance(outcome, AuditUnavailable) for outcome in outcomes] == (
        [False] * 30 + [True] + [False] * 30
    )
    assert _rows(engine) == 1 + len(good)
    failures = [call.kwargs for call in captured.calls if call.method_name == "error"]
    assert all(entry["event"] == "audit commit failed" for entry in failures)
    assert [poisoned.decision_id] in [entry["decision_ids"] for entry in failures]
    text = repr(failures)  # the decision ids and the driver's first line, no row's values
    assert "sw.secret-name" not in text and "P-1" not in text


def test_readyz_is_not_ready_while_audit_commits_fail(
    scenario_server: Server, engine: Engine
) -> None:
    """Whatever makes commits fail (here the audit table is gone; a full disk or a lock
    likewise), /readyz says not ready until a probe commit succeeds again."""
    assert scenario_server.get("/readyz", key=None).status_code == 200
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_decisions RENAME TO audit_decisions_away"))
    try:
        assert scenario_server.post("/v1/decisions", json=MASH_REQUEST).status_code == 503
        response = scenario_server.get("/readyz", key=None)
        assert response.status_code == 503, response.text
        assert "audit rows cannot be written" in response.json()["detail"]
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_decisions_away RENAME TO audit_decisions"))
    assert scenario_server.get("/readyz", key=None).status_code == 200
    assert scenario_server.post("/v1/decisions", json=MASH_REQUEST).status_code == 200
