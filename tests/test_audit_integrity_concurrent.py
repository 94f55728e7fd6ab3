"""Verify and purge while decisions are being written, the chain head for operators, and the
PostgreSQL guards on the chain's tables (TRUNCATE, the head, the checkpoints)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from app.audit.chain import GENESIS
from app.audit.integrity import Purge, purge_before, verify_chain
from app.config import PROJECT_DIR
from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditChainHead, AuditCheckpoint, AuditDecision
from tests.audit_rows import write_rows
from tests.conftest import (
    AUDIT_SIGNER,
    MASH_REQUEST,
    ProcessServer,
    Server,
    accord,
    import_agreements_from,
    scenario_env,
)
from tests.postgres import ThrowawayPostgres


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request left
    seconds: float
    status: int


class DecisionLoad:
    """Threads posting decisions to a real server without pause, timing every answer."""

    def __init__(self, server: Server, threads: int = 4) -> None:
        self.server = server
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask) for _ in range(threads)]

    def _ask(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status = client.post("/v1/decisions", json=MASH_REQUEST, timeout=30).status_code
                except httpx.TransportError:
                    status = 0
                with self._lock:
                    self.answers.append(Answer(sent, time.monotonic() - sent, status))

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.answers if start <= answer.sent <= end]

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.05)

    def __enter__(self) -> DecisionLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _write(engine: Engine, count: int, at: datetime) -> None:
    """Chain `count` rows decided at `at`, a microsecond apart."""
    write_rows(engine, [at + timedelta(microseconds=n) for n in range(count)])


def _rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AuditDecision)) or 0)


S = TypeVar("S", bound=Server)


def _serve(database_url: str, server_factory: Callable[[dict[str, str]], S]) -> S:
    env = scenario_env(database_url)
    import_agreements_from(env)
    return server_factory(env)


# 1. Verify under load: rows committed while it reads are not a break.


@pytest.mark.slow
def test_verify_is_intact_every_time_while_decisions_are_written(
    database_url: str, engine: Engine, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    _write(engine, 8000, datetime.now(UTC) - timedelta(hours=1))  # two read batches
    server = _serve(database_url, server_factory)
    env = scenario_env(database_url)
    seen: list[int] = []
    with DecisionLoad(server) as load:
        load.wait_for(20)
        for _ in range(20):  # the function the CLI and the endpoint both use
            with engine.connect() as connection:
                result = verify_chain(connection, AUDIT_SIGNER.keyring())
            assert result.intact, result.broken
            seen.append(result.last_seq)
        for _ in range(20):
            report = server.get("/v1/audit/verify", timeout=30).json()
            assert report["intact"] is True, report
            seen.append(report["last_seq"])
        for _ in range(3):
            verified = accord("audit", "verify", env=env, check=False)
            assert verified.returncode == 0, verified.stderr
            assert verified.stdout.startswith("intact: ")
    statuses = {answer.status for answer in load.answers}
    assert statuses == {200}, statuses
    assert seen[-1] > seen[0] > 8000, "the chain did not grow while it was verified"
    total = _rows(engine)
    with engine.connect() as connection:
        final = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert final.intact and final.rows_checked == final.last_seq == total


# 2. Purge under load: decisions are not held up by the verification, nor the deletion.

OLD_ROWS = 60_000


@pytest.mark.slow  # a latency bound: a real `accord serve`, not one sharing the test's GIL
def test_a_purge_of_many_rows_does_not_stall_decisions(
    database_url: str,
    engine: Engine,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
) -> None:
    _write(engine, OLD_ROWS, datetime.now(UTC) - timedelta(days=3650))
    server = _serve(database_url, process_server_factory)
    env = scenario_env(database_url)
    verified: list[tuple[int, str, str]] = []
    purging = threading.Event()

    def verify_meanwhile() -> None:  # a purge moves the checkpoint: no false break either
        while purging.is_set():  # in its own process, so not slowing the load's threads
            result = accord("audit", "verify", env=env, check=False)
            verified.append((result.returncode, result.stdout, result.stderr))

    with DecisionLoad(server) as load:
        load.wait_for(50)
        purging.set()
        verifier = threading.Thread(target=verify_meanwhile)
        verifier.start()
        started = time.monotonic()
        purged = accord("audit", "purge", "--actor", "dpo", env=env, check=False)
        finished = time.monotonic()
        purging.clear()
        verifier.join(timeout=60)
        time.sleep(0.3)  # answers to requests sent during the purge arrive
    assert purged.returncode == 0, purged.stderr
    assert verified and all(code == 0 for code, _, _ in verified), verified
    assert f"purged {OLD_ROWS} rows up to row {OLD_ROWS}" in purged.stdout
    during = load.between(started, finished)
    assert len(during) >= 20, f"{len(during)} decisions during a {finished - started:.1f} s purge"
    assert {answer.status for answer in during} == {200}
    slowest = max(answer.seconds for answer in during)
    assert slowest < 0.5, f"a decision took {slowest:.2f} s while the purge ran"

    with engine.connect() as connection:
        checkpoints = connection.execute(
            select(AuditCheckpoint.last_seq, AuditCheckpoint.rows_removed).order_by(
                AuditCheckpoint.id
            )
        ).all()
        oldest = connection.scalar(select(func.min(AuditDecision.seq)))
        verification = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert checkpoints[-1].last_seq == OLD_ROWS
    assert sum(checkpoint.rows_removed for checkpoint in checkpoints) == OLD_ROWS
    assert [c.last_seq for c in checkpoints] == sorted(c.last_seq for c in checkpoints)
    assert oldest == OLD_ROWS + 1
    assert verification.intact and verification.rows_checked == _rows(engine)


# 3. `accord audit head`: the head to copy out of the database.


def _head(env: dict[str, str]) -> dict[str, Any]:
    result = accord("audit", "head", env=env)
    head: dict[str, Any] = json.loads(result.stdout)
    return head


@pytest.mark.slow
def test_the_head_command_prints_the_chain_head(database_url: str, engine: Engine) -> None:
    env = scenario_env(database_url)
    empty = _head(env)
    assert (empty["seq"], empty["hash"], empty["decision_id"]) == (0, GENESIS, None)

    _write(engine, 5, datetime.now(UTC) - timedelta(days=3650))
    _write(engine, 3, datetime.now(UTC) - timedelta(days=3000))
    with engine.connect() as connection:
        last = connection.execute(
            select(AuditDecision.decision_id, AuditDecision.row_hash).where(AuditDecision.seq == 8)
        ).one()
        stored = connection.execute(select(AuditChainHead.last_seq, AuditChainHead.last_hash)).one()
    head = _head(env)
    assert (head["seq"], head["hash"], head["decision_id"]) == (8, last.row_hash, last.decision_id)
    assert (head["seq"], head["hash"]) == tuple(stored)
    read_at = datetime.fromisoformat(head["read_at"])
    assert abs(datetime.now(UTC) - read_at) < timedelta(minutes=1)

    assert purge_before(
        engine, before=datetime.now(UTC) - timedelta(days=1), actor="t", signer=AUDIT_SIGNER
    ) == Purge(8, 8)
    after = _head(env)  # the head row is gone; its seq and hash stay, behind a checkpoint
    assert (after["seq"], after["hash"], after["decision_id"]) == (8, last.row_hash, None)


# 4. PostgreSQL: TRUNCATE, the head and the checkpoints are guarded.

GUARDED = ("audit_decisions", "audit_chain_head", "audit_checkpoints", "break_glass_reviews")


def _refused(engine: Engine, *statements: str, purge_flag: bool = False) -> str:
    with pytest.raises(DBAPIError) as refused, engine.begin() as connection:
        if purge_flag:
            connection.execute(text("SET LOCAL accord.purge = 'on'"))
        for statement in statements:
            connection.execute(text(statement))
    return str(refused.value.orig)


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def test_postgresql_refuses_truncate_and_rewriting_the_head_or_checkpoints(
    postgres: ThrowawayPostgres,
) -> None:
    url = postgres.new_database()
    upgrade_schema(url)
    engine = make_engine(url)
    try:
        _write(engine, 10, datetime.now(UTC) - timedelta(days=3650))
        _write(engine, 5, datetime.now(UTC) - timedelta(minutes=1))
        assert purge_before(
            engine, before=datetime.now(UTC) - timedelta(days=1), actor="dpo", signer=AUDIT_SIGNER
        ) == Purge(10, 10)

        for table in GUARDED:
            problem = _refused(engine, f"TRUNCATE {table}")
            assert f"accord: {table} is append-only (TRUNCATE refused)" in problem
            # The purge flag lets rows of audit_decisions go one by one, never a TRUNCATE.
            assert "TRUNCATE refused" in _refused(engine, f"TRUNCATE {table}", purge_flag=True)
        assert "TRUNCATE refused" in _refused(engine, "TRUNCATE audit_decisions, audit_chain_head")

        head_moves = {
            "DELETE FROM audit_chain_head": "DELETE refused",
            "INSERT INTO audit_chain_head (id, last_seq, last_hash) "
            f"VALUES (2, 0, '{GENESIS}')": "INSERT refused",
            f"UPDATE audit_chain_head SET last_seq = 0, last_hash = '{GENESIS}'": "backwards",
            "UPDATE audit_chain_head SET last_seq = last_seq - 1": "backwards",
            "UPDATE audit_chain_head SET last_hash = md5('x') || md5('y')": "backwards",
            "UPDATE audit_chain_head SET last_seq = last_seq + 1": "no row",
            "UPDATE audit_chain_head SET id = 2": "UPDATE refused",
        }
        for statement, why in head_moves.items():
            for flag in (False, True):
                problem = _refused(engine, statement, purge_flag=flag)
                assert "accord: audit_chain_head" in problem and why in problem, problem
        for statement in (
            "UPDATE audit_checkpoints SET rows_removed = 0",
            "DELETE FROM audit_checkpoints",
        ):
            for flag in (False, True):
                assert "audit_checkpoints is append-only" in _refused(
                    engine, statement, purge_flag=flag
                )

        # Nothing changed, and the writer, verify, head and purge still work.
        assert _rows(engine) == 5
        _write(engine, 4, datetime.now(UTC))
        with engine.connect() as connection:
            verification = verify_chain(connection, AUDIT_SIGNER.keyring())
        assert verification.intact and (verification.rows_checked, verification.last_seq) == (
            9,
            19,
        )
        env = scenario_env(url)
        assert _head(env)["seq"] == 19
        assert "nothing decided before" in accord("audit", "purge", env=env).stdout
        assert accord("audit", "verify", env=env).stdout.startswith("intact: 9 rows verified")

        # The downgrade removes exactly what 0004 added; the upgrade puts it back.
        with_guards = _triggers(engine)
        assert {f"{table}_no_truncate" for table in GUARDED} | {
            "audit_chain_head_forward_only"
        } <= with_guards
        command.downgrade(_alembic(url), "0003")
        assert _triggers(engine) == {
            "audit_decisions_append_only",
            "audit_checkpoints_append_only",
            "break_glass_reviews_append_only",
        }
        with engine.connect() as connection:
            functions = set(
                connection.scalars(text("SELECT proname FROM pg_proc WHERE proname LIKE 'accord%'"))
            )
        assert functions == {"accord_append_only"}
        upgrade_schema(url)
        assert _triggers(engine) == with_guards
    finally:
        engine.dispose()
