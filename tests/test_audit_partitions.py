"""The audit table at scale (PostgreSQL): monthly partitions made ahead, retention by
dropping whole months behind a signed checkpoint, the cut where months straddle, the
DEFAULT partition as a safety net, incremental verification from a signed verification
record (both databases), and migration 0012 both ways."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.audit.integrity import (
    Purge,
    purge_before,
    record_verification,
    verify_chain,
)
from app.audit.partitions import (
    DEFAULT_PARTITION,
    ensure_partitions,
    is_partitioned,
    list_partitions,
    month_start,
    next_month,
    partition_name,
)
from app.audit.signing import public_path
from app.config import PROJECT_DIR
from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditCheckpoint, AuditDecision, AuditVerification
from tests.audit_rows import write_rows
from tests.conftest import AUDIT_KEY_FILE, AUDIT_SIGNER, accord, scenario_env
from tests.postgres import ThrowawayPostgres


def _month(offset: int) -> datetime:
    """The first instant of the month `offset` months from this one (negative: past)."""
    start = month_start(datetime.now(UTC))
    if offset >= 0:
        for _ in range(offset):
            start = next_month(start)
        return start
    for _ in range(-offset):
        start = month_start(start - timedelta(days=1))
    return start


def _in(month: datetime, n: int) -> datetime:
    """The n-th moment written in `month` (a few minutes apart, from its third day)."""
    return month + timedelta(days=2, minutes=n)


@pytest.fixture
def pg_engine(postgres: ThrowawayPostgres) -> Iterator[Engine]:
    url = postgres.new_database()
    upgrade_schema(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _where(engine: Engine) -> list[tuple[int, str]]:
    """(seq, the partition its row is in), in seq order."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT seq, tableoid::regclass::text FROM audit_decisions ORDER BY seq")
        ).all()
    return [(int(seq), str(name)) for seq, name in rows]


def _names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [partition.name for partition in list_partitions(connection)]


def _verify(engine: Engine, *, since: bool = False) -> tuple[int, int, str | None]:
    """(rows checked, last seq, the broken link's problem or None)."""
    with engine.connect() as connection:
        result = verify_chain(connection, AUDIT_SIGNER.keyring(), since_verified=since)
    return (
        result.rows_checked,
        result.last_seq,
        None if result.broken is None else (result.broken.problem),
    )


def _tamper(engine: Engine, seq: int) -> None:
    """Change a row's decision as a database owner could (PostgreSQL: triggers skipped)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(
            text(
                "UPDATE audit_decisions SET decision = CASE decision WHEN 'permit' THEN 'deny' "
                "ELSE 'permit' END WHERE seq = :seq"
            ),
            {"seq": seq},
        )


def _checkpoints(engine: Engine) -> list[AuditCheckpoint]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)))


# 1. Partitions made ahead, listed; rows land in their month's partition.


def test_partitions_are_made_ahead_listed_and_rows_land_in_their_month(
    pg_engine: Engine,
) -> None:
    names = _names(pg_engine)
    ahead = [partition_name(_month(n)) for n in range(3)]
    assert names == [*ahead, DEFAULT_PARTITION]  # by the migration: this month and two more

    # The service's follower: the months from a given moment, those missing only.
    assert ensure_partitions(pg_engine, _month(1), 3) == [
        partition_name(_month(3)),
        partition_name(_month(4)),
    ]
    assert ensure_partitions(pg_engine, _month(1), 3) == []
    assert ensure_partitions(pg_engine, _month(-2), 0) == [partition_name(_month(-2))]

    write_rows(
        pg_engine,
        [_in(_month(-2), 0), _in(_month(0), 0), _in(_month(4), 0), _in(_month(-30), 0)],
    )
    assert _where(pg_engine) == [
        (1, partition_name(_month(-2))),
        (2, partition_name(_month(0))),
        (3, partition_name(_month(4))),
        (4, DEFAULT_PARTITION),  # a month with no partition: kept, not refused
    ]
    assert _verify(pg_engine) == (4, 4, None)
    # A partition cannot be made for a month the DEFAULT partition holds rows of: logged,
    # and the other months are still made.
    made = ensure_partitions(pg_engine, _month(-30), 1)
    assert made == [partition_name(_month(-29))]

    env = scenario_env(str(pg_engine.url.render_as_string(hide_password=False)))
    result = accord("audit", "partitions", "--create-ahead", "5", env=env)
    assert f"made 1 partitions: {partition_name(_month(5))}" in result.stdout
    listed = [line for line in result.stdout.splitlines() if line.startswith("audit_decisions_")]
    assert [line.split("\t")[0] for line in listed] == _names(pg_engine)
    assert f"FOR VALUES FROM ('{_month(0):%Y-%m-%d}" in listed[2]
    assert listed[-1].startswith(f"{DEFAULT_PARTITION}\tDEFAULT\t")
    assert f"WARNING: {DEFAULT_PARTITION} holds 1 rows" in result.stderr


def test_the_partitions_command_on_sqlite_says_the_table_is_not_partitioned(
    backend_engine_without_schema: Engine,
) -> None:
    engine = backend_engine_without_schema
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's table is not partitioned")
    url = str(engine.url)
    upgrade_schema(url)
    result = accord("audit", "partitions", "--create-ahead", "2", env=scenario_env(url))
    assert "the audit table is not partitioned (sqlite)" in result.stdout
    with engine.connect() as connection:
        assert not is_partitioned(connection)
    assert ensure_partitions(engine, datetime.now(UTC), 2) == []


# 2. Retention: whole months dropped behind one signed checkpoint.


def test_retention_drops_whole_months_behind_a_signed_checkpoint(pg_engine: Engine) -> None:
    ensure_partitions(pg_engine, _month(-14), 2)  # months -14, -13, -12
    moments = (
        [_in(_month(-14), n) for n in range(5)]
        + [_in(_month(-13), n) for n in range(4)]
        + [_in(_month(-12), n) for n in range(3)]
        + [_in(_month(0), n) for n in range(2)]
    )
    write_rows(pg_engine, moments)
    with pg_engine.connect() as connection:
        hash_of_9 = connection.scalar(select(AuditDecision.row_hash).where(AuditDecision.seq == 9))

    # The cut-off in the middle of month -12: months -14 and -13 go whole, -12 stays.
    before = _month(-12) + timedelta(days=10)
    assert purge_before(
        pg_engine, before=before, actor="dpo", signer=AUDIT_SIGNER, whole_months=True
    ) == Purge(9, 9)
    names = _names(pg_engine)
    assert partition_name(_month(-14)) not in names
    assert partition_name(_month(-13)) not in names
    assert partition_name(_month(-12)) in names
    assert [seq for seq, _ in _where(pg_engine)] == list(range(10, 15))
    [checkpoint] = _checkpoints(pg_engine)
    assert (checkpoint.last_seq, checkpoint.last_hash, checkpoint.rows_removed) == (9, hash_of_9, 9)
    assert checkpoint.created_by == "dpo" and checkpoint.signature
    assert abs(checkpoint.purged_before - before) < timedelta(seconds=1)
    assert _verify(pg_engine) == (5, 14, None)

    # The same cut-off again: nothing more (month -12 is not wholly before it).
    assert (
        purge_before(pg_engine, before=before, actor="dpo", signer=AUDIT_SIGNER, whole_months=True)
        is None
    )
    assert len(_checkpoints(pg_engine)) == 1

    # A changed row in a remaining partition is still found; as is a forged checkpoint.
    _tamper(pg_engine, 11)
    assert _verify(pg_engine) == (1, 10, "its content was changed")
    _tamper(pg_engine, 11)
    assert _verify(pg_engine) == (5, 14, None)


def test_the_cut_stops_where_months_straddle_and_the_default_rows_go_too(
    pg_engine: Engine,
) -> None:
    """seq follows commit order and decided_at is stamped before the commit, so a row of
    month A can follow one of month B. The cut is the highest seq up to which every row
    goes; a month holding a row past it waits for the month after it."""
    ensure_partitions(pg_engine, _month(-14), 2)  # A = -14, B = -13, C = -12
    a, b, c = _month(-14), _month(-13), _month(-12)
    old = _month(-40)  # no partition: the DEFAULT one
    moments = [
        _in(old, 0),  # 1 default
        _in(a, 0),  # 2 A
        _in(a, 1),  # 3 A
        _in(b, 0),  # 4 B
        _in(a, 2),  # 5 A: committed after a row of B
        _in(b, 1),  # 6 B
        _in(old, 1),  # 7 default, committed late
        _in(c, 0),  # 8 C
    ]
    write_rows(pg_engine, moments)

    # Up to the start of B: A's last row (5) is past the first kept row (4); A cannot
    # go whole, so only the DEFAULT row before it goes.
    assert purge_before(
        pg_engine, before=b, actor="dpo", signer=AUDIT_SIGNER, whole_months=True
    ) == Purge(1, 1)
    assert partition_name(a) in _names(pg_engine)
    assert [seq for seq, _ in _where(pg_engine)] == list(range(2, 9))
    assert _verify(pg_engine) == (7, 8, None)

    # Up to the start of C: A and B go whole, and the late DEFAULT row 7 with them.
    assert purge_before(
        pg_engine, before=c, actor="dpo", signer=AUDIT_SIGNER, whole_months=True
    ) == Purge(7, 6)
    names = _names(pg_engine)
    assert partition_name(a) not in names and partition_name(b) not in names
    assert _where(pg_engine) == [(8, partition_name(c))]
    assert [(cp.last_seq, cp.rows_removed) for cp in _checkpoints(pg_engine)] == [(1, 1), (7, 6)]
    assert _verify(pg_engine) == (1, 8, None)

    # The chain goes on, and the command says what it did.
    write_rows(pg_engine, [datetime.now(UTC)])
    assert _verify(pg_engine) == (2, 9, None)


def test_the_purge_command_drops_months_or_with_exact_rows_deletes_them(
    postgres: ThrowawayPostgres,
) -> None:
    url = postgres.new_database()
    upgrade_schema(url)
    engine = make_engine(url)
    try:
        ensure_partitions(engine, _month(-80), 1)  # months -80 and -79: past retention
        write_rows(
            engine,
            [_in(_month(-80), n) for n in range(4)]
            + [_in(_month(-79), n) for n in range(3)]
            + [_month(-79) + timedelta(days=25)]
            + [datetime.now(UTC) - timedelta(minutes=1)],
        )
        env = scenario_env(url)
        cutoff = (_month(-79) + timedelta(days=20)).date().isoformat()
        result = accord("audit", "purge", "--before", cutoff, "--actor", "dpo", env=env)
        assert "purged 4 rows up to row 4" in result.stdout  # month -80, whole
        assert partition_name(_month(-80)) not in _names(engine)
        assert [seq for seq, _ in _where(engine)] == list(range(5, 10))
        assert "intact: 5 rows verified" in accord("audit", "verify", env=env).stdout

        # To the exact day instead: month -79's rows before it go, in batches.
        result = accord("audit", "purge", "--before", cutoff, "--exact-rows", env=env)
        assert "purged 3 rows up to row 7" in result.stdout
        assert [seq for seq, _ in _where(engine)] == [8, 9]
        assert [(c.last_seq, c.rows_removed) for c in _checkpoints(engine)] == [(4, 4), (7, 3)]
        assert "intact: 2 rows verified" in accord("audit", "verify", env=env).stdout
    finally:
        engine.dispose()


def test_the_purge_permission_still_guards_partitions(pg_engine: Engine) -> None:
    """The append-only guards reach every partition: no UPDATE, no DELETE without the
    purge flag, no TRUNCATE of a partition even with it."""
    write_rows(pg_engine, [datetime.now(UTC)])
    partition = partition_name(_month(0))
    for statement in (
        f"UPDATE {partition} SET decision = 'deny'",
        f"DELETE FROM {partition}",
        "UPDATE audit_decisions SET decision = 'deny'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), pg_engine.begin() as connection:
            connection.execute(text(statement))
    with pytest.raises(DBAPIError, match="TRUNCATE refused"), pg_engine.begin() as connection:
        connection.execute(text("SET LOCAL accord.purge = 'on'"))
        connection.execute(text(f"TRUNCATE {partition}"))
    with pg_engine.connect() as connection:
        verified = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert record_verification(pg_engine, verified, signer=AUDIT_SIGNER, actor="t")
    for statement in ("DELETE FROM audit_verifications", "UPDATE audit_verifications SET id = 2"):
        with pytest.raises(DBAPIError, match="append-only"), pg_engine.begin() as connection:
            connection.execute(text(statement))
    assert _verify(pg_engine) == (1, 1, None)


# 3. Incremental verification from a signed verification record (both databases).


def test_since_checkpoint_verifies_only_the_rows_after_the_last_verification(
    database_url: str, engine: Engine
) -> None:
    now = datetime.now(UTC)
    write_rows(engine, [now - timedelta(minutes=30 - n) for n in range(10)])
    env = scenario_env(database_url)

    full = accord("audit", "verify", "--actor", "nightly", env=env)
    assert "intact: 10 rows verified, chain head at row 10" in full.stdout
    assert "recorded as verified up to row 10" in full.stdout
    with Session(engine) as session:
        [record] = session.scalars(select(AuditVerification))
        assert (record.last_seq, record.rows_checked, record.verified_by) == (10, 10, "nightly")
        assert record.signature and record.signature.startswith("ed25519:")

    write_rows(engine, [now - timedelta(minutes=5 - n) for n in range(3)])
    since = accord("audit", "verify", "--since-checkpoint", env=env)
    assert "intact: 3 rows verified after row 10, chain head at row 13" in since.stdout
    assert "recorded as verified up to row 13" in since.stdout
    # An auditor's public key checks, and records nothing.
    public = str(public_path(AUDIT_KEY_FILE))
    again = accord("audit", "verify", "--since-checkpoint", "--public-key", public, env=env)
    assert "intact: 0 rows verified after row 13, chain head at row 13" in again.stdout
    assert "recorded" not in again.stdout

    # A row changed after the last verification is found by the incremental run...
    write_rows(engine, [now - timedelta(minutes=1)])
    _tamper(engine, 14)
    assert _verify(engine, since=True) == (0, 13, "its content was changed")
    _tamper(engine, 14)
    # ...a row changed before it is left to a full verification, unless it is the row
    # the record names.
    _tamper(engine, 5)
    assert _verify(engine, since=True) == (1, 14, None)
    assert _verify(engine)[2] == "its content was changed"
    _tamper(engine, 5)
    _tamper(engine, 13)
    assert _verify(engine, since=True)[2] == (
        "its content was changed after a verification recorded its hash"
    )
    _tamper(engine, 13)

    # A verification record forged by a database writer (no key) is a break, not a start.
    with engine.begin() as connection:
        hash_of_14 = connection.scalar(
            select(AuditDecision.row_hash).where(AuditDecision.seq == 14)
        )
        connection.execute(
            insert(AuditVerification).values(
                last_seq=14,
                last_hash=hash_of_14,
                rows_checked=14,
                verified_at=datetime.now(UTC),
                verified_by="mallory",
            )
        )
    assert "verification up to row 14 is not signed" in (_verify(engine, since=True)[2] or "")
    assert _verify(engine) == (14, 14, None)  # a full verification does not rely on it


def test_since_checkpoint_starts_after_a_purge_that_went_past_the_record(engine: Engine) -> None:
    old = datetime.now(UTC) - timedelta(days=3650)
    write_rows(engine, [old + timedelta(minutes=n) for n in range(6)])
    with engine.connect() as connection:
        result = verify_chain(connection, AUDIT_SIGNER.keyring())
    assert record_verification(engine, result, signer=AUDIT_SIGNER, actor="t") is not None
    assert record_verification(engine, result, signer=AUDIT_SIGNER, actor="t") is None  # same
    write_rows(engine, [old + timedelta(days=1, minutes=n) for n in range(4)])
    write_rows(engine, [datetime.now(UTC) - timedelta(minutes=1)])
    purged = purge_before(
        engine,
        before=datetime.now(UTC) - timedelta(days=30),
        actor="t",
        signer=AUDIT_SIGNER,
        whole_months=True,
    )
    assert purged == Purge(10, 10)
    assert _verify(engine, since=True) == (1, 11, None)


# 4. Migration 0012 over a table that holds rows, and back.


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _constraints(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'audit_decisions'::regclass"
            )
        ).all()
    return {str(name): str(definition) for name, definition in rows}


def _indexes(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.scalars(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'audit_decisions'")
            )
        )


def test_the_migration_partitions_a_table_with_rows_and_downgrades_back(
    postgres: ThrowawayPostgres,
) -> None:
    url = postgres.new_database()
    upgrade_schema(url, "0011")
    engine = make_engine(url)
    try:
        indexes_before = _indexes(engine)
        write_rows(
            engine,
            [_in(_month(-20), 0), _in(_month(-20), 1), _in(_month(-7), 0), datetime.now(UTC)],
        )
        upgrade_schema(url)
        with engine.connect() as connection:
            assert is_partitioned(connection)
        assert _where(engine) == [
            (1, partition_name(_month(-20))),
            (2, partition_name(_month(-20))),
            (3, partition_name(_month(-7))),
            (4, partition_name(_month(0))),
        ]
        names = _names(engine)  # every month from the oldest row's to two ahead
        assert names[0] == partition_name(_month(-20))
        assert names[-2:] == [partition_name(_month(2)), DEFAULT_PARTITION]
        assert len(names) == 20 + 3 + 1
        assert _constraints(engine) == {
            "pk_audit_decisions": "PRIMARY KEY (seq, decided_at)",
            "uq_audit_decisions_decision_id": "UNIQUE (decision_id, decided_at)",
        }
        assert _indexes(engine) == indexes_before
        assert _verify(engine) == (4, 4, None)
        write_rows(engine, [datetime.now(UTC)])  # the writer and the guards work on it
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_decisions"))

        command.downgrade(_alembic(url), "0011")
        with engine.connect() as connection:
            assert not is_partitioned(connection)
            assert connection.scalar(text("SELECT to_regclass('audit_verifications')")) is None
        assert [seq for seq, _ in _where(engine)] == [1, 2, 3, 4, 5]
        assert {name for _, name in _where(engine)} == {"audit_decisions"}
        assert _constraints(engine) == {
            "pk_audit_decisions": "PRIMARY KEY (seq)",
            "uq_audit_decisions_decision_id": "UNIQUE (decision_id)",
        }
        assert _indexes(engine) == indexes_before
        assert _verify(engine) == (5, 5, None)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_decisions"))
        # 0003's guard again: the purge flag lets rows go from the plain table.
        assert purge_before(
            engine,
            before=_month(-6),
            actor="dpo",
            signer=AUDIT_SIGNER,
            whole_months=True,
        ) == Purge(3, 3)
        upgrade_schema(url)
        assert _verify(engine) == (2, 5, None)
    finally:
        engine.dispose()
