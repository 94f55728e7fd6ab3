"""The database turns read-only under a running server: 503 and not ready, then recovery alone.

PostgreSQL: the cluster is put in read-only mode as operators (and disk-full
guards) do, `ALTER SYSTEM SET default_transaction_read_only = on` and a
configuration reload, which every open session, the server's pooled ones
included, applies before its next statement; `ALTER SYSTEM RESET` and another
reload make it writable again. Its own throwaway server: the setting is
cluster-wide.

SQLite: the database file and its WAL are made immutable (`chattr +i`), so
writes through the server's already-open descriptors fail as they do when the
kernel remounts a filesystem read-only. Nothing gentler is genuine: chmod
changes nothing for descriptors already open (and root ignores it), and
`mount -o remount,ro` is refused (EBUSY) while the server holds the files open
for writing. Skipped where chattr is not permitted (no CAP_LINUX_IMMUTABLE, or
a filesystem without the flag).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from app.store.database import upgrade_schema
from tests.audit_rows import recorded_decision_ids
from tests.conftest import SCENARIO, Server, accord, scenario_env, start_server, wait_until
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.slow  # a real server on a database turning read-only

BASE = {
    "requester": "la.blackpool.childrens-services",
    "holder": "police.lancashire",
    "subject": {"id": "P-101", "attributes": {"age": 12}},
    "purpose": "safeguarding.children",
}
SINGLE = {**BASE, "field": "criminal.convictions"}
BATCH = {**BASE, "fields": ["criminal.convictions", "criminal.intelligence", "identity.name"]}


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request left
    received: float  # and when its answer arrived
    status: int
    content_type: str
    decision_ids: list[str]
    gave_decision: bool  # a "decision" or "decisions" in the body


def _ask(client: httpx.Client, path: str, body: object) -> Answer:
    sent = time.monotonic()
    response = client.post(path, json=body, timeout=15)
    payload = response.json()
    if "decisions" in payload:
        ids = [decision["decision_id"] for decision in payload["decisions"]]
    else:
        ids = [payload["decision_id"]] if "decision_id" in payload else []
    return Answer(
        sent,
        time.monotonic(),
        response.status_code,
        response.headers["content-type"],
        ids,
        "decision" in payload or "decisions" in payload,
    )


def _readonly_then_writable(
    server: Server, url: str, make_readonly: Callable[[], None], make_writable: Callable[[], None]
) -> None:
    answers: list[Answer] = []
    stop = threading.Event()

    def load() -> None:
        with server.client() as client:
            turn = 0
            while not stop.is_set():
                turn += 1
                path, body = (
                    ("/v1/decisions/batch", BATCH) if turn % 3 == 0 else ("/v1/decisions", SINGLE)
                )
                answers.append(_ask(client, path, body))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1)
        make_readonly()
        assert wait_until(lambda: server.get("/readyz").status_code == 503, 10), "still ready"
        readonly_from = time.monotonic() + 0.5  # let every pooled session see the change
        time.sleep(1.5)
        not_ready = server.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"] == "application/problem+json"
        with server.client() as client:
            for path, body in (("/v1/decisions", SINGLE), ("/v1/decisions/batch", BATCH)):
                refused = _ask(client, path, body)
                assert refused.status == 503
                assert refused.content_type == "application/problem+json"
                assert refused.decision_ids == [] and not refused.gave_decision
        readonly_until = time.monotonic()
        make_writable()
        assert wait_until(lambda: server.get("/readyz").status_code == 200, 20), "not ready again"
        assert wait_until(
            lambda: server.post("/v1/decisions", json=SINGLE).status_code == 200, 20
        ), "no decision after the database became writable"
        time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=30)

    assert {answer.status for answer in answers} <= {200, 503}
    # asked after every session saw the change, answered before it was undone
    during = [a for a in answers if readonly_from <= a.sent and a.received <= readonly_until]
    assert during, "no load while the database was read-only"
    assert all(answer.status == 503 and not answer.decision_ids for answer in during), [
        (answer.status, answer.decision_ids) for answer in during if answer.status != 503
    ]
    assert all(
        answer.content_type == "application/problem+json" and not answer.gave_decision
        for answer in answers
        if answer.status == 503
    )
    answered = [i for answer in answers if answer.status == 200 for i in answer.decision_ids]
    after = [answer for answer in answers if answer.sent > readonly_until]
    assert answered and any(answer.status == 200 for answer in after)
    recorded = recorded_decision_ids(url, answered)
    assert recorded == set(answered), "a decision was answered without its audit row"
    assert accord("audit", "verify", env=server.env).stdout.startswith("intact")


def _chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chattr", flag, *map(str, paths)], capture_output=True, text=True, timeout=10
    )


@contextmanager
def _immutable_capable_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="accord-readonly-"))
    try:
        probe = folder / "probe"
        probe.write_bytes(b"")
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed: no honest way to make SQLite read-only")
        refused = _chattr("+i", probe)
        if refused.returncode != 0:
            pytest.skip(
                "chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE and a filesystem "
                f"with the flag): {refused.stderr.strip()}"
            )
        _chattr("-i", probe)
        yield folder
    finally:
        for path in folder.glob("*"):
            _chattr("-i", path)  # an immutable file cannot be removed, even by root
        shutil.rmtree(folder, ignore_errors=True)


def test_sqlite_turning_read_only_answers_503_then_recovers(tmp_path: Path) -> None:
    with _immutable_capable_folder() as folder:
        database = folder / "accord.db"
        url = f"sqlite:///{database}"
        upgrade_schema(url)
        env = scenario_env(url)
        accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
        server = start_server(env, tmp_path)
        files = [database, Path(f"{database}-wal")]  # the server holds both open
        try:
            assert all(path.exists() for path in files)

            def make_readonly() -> None:
                refused = _chattr("+i", *files)
                assert refused.returncode == 0, refused.stderr

            def make_writable() -> None:
                allowed = _chattr("-i", *files)
                assert allowed.returncode == 0, allowed.stderr

            _readonly_then_writable(server, url, make_readonly, make_writable)
        finally:
            _chattr("-i", *files)
            server.stop()


def test_postgresql_turning_read_only_answers_503_then_recovers(tmp_path: Path) -> None:
    postgres = ThrowawayPostgres()  # ALTER SYSTEM is cluster-wide: not the shared server
    postgres.start()
    try:
        url = postgres.new_database()
        upgrade_schema(url)
        env = scenario_env(url)
        accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
        server = start_server(env, tmp_path)
        admin = psycopg.connect(
            host=str(postgres.socket_dir),
            port=postgres.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        )
        try:

            def make_readonly() -> None:
                admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                admin.execute("SELECT pg_reload_conf()")

            def make_writable() -> None:
                admin.execute("SET default_transaction_read_only = off")
                admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
                admin.execute("SELECT pg_reload_conf()")

            _readonly_then_writable(server, url, make_readonly, make_writable)
        finally:
            admin.close()
            server.stop()
    finally:
        postgres.stop()
