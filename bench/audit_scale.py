"""Audit trail at scale: build N chained audit rows, then time a person query and a full verify.

    python -m bench.audit_scale                 # 10 million rows, SQLite in a temp folder
    python -m bench.audit_scale --rows 20000    # a smoke run
    python -m bench.audit_scale --database-url postgresql+psycopg://...
    python -m bench.audit_scale --backend postgresql [--rows 10000000]

Rows are written the way the audit writer writes them (chain_rows + one insert
per batch, the head moved in the same transaction), so verify walks a real chain.
Prints a table and a JSON line.

`--backend postgresql` builds on a throwaway PostgreSQL (initdb/pg_ctl,
tests/postgres.py; or `--database-url`, an empty database) at the schema head, whose
audit table is partitioned by month: decided_at runs evenly, in seq order, over the
last 365 days up to now, into the month partitions `ensure_partitions` makes; rows
go in with `insert_rows` (COPY), `PG_WRITE_BATCH` a transaction, the head moved and
signed in each, as above. Then it times: the person query (the API's first page);
a full verify, in a fresh process so its peak RSS is the verify's own; the verify of
the newest day's rows only (`since_verified`), after a signed verification record up
to the last row before that day (recorded with `record_verification` from the hashes
the build gave, once the full verify has proven them); and the retention purge of the
oldest month (`purge_before(..., whole_months=True)`, which verifies first and then
drops the partition) while a real AuditWriter in another process takes one-row
writes from `--callers` asyncio callers, with the writes' latency in the 5 s before
the purge and during it; then the remaining chain is verified again. Measured
figures are printed as they come (a partial run still reports them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from app.audit.chain import GENESIS, ChainHead, Verification, chain_rows
from app.audit.integrity import purge_before, record_verification, verify_chain
from app.audit.partitions import (
    MONTHS_AHEAD,
    ensure_partitions,
    list_partitions,
    month_start,
    next_month,
)
from app.audit.queries import AuditFilter, search_decisions
from app.audit.signing import AuditSigner, configured_signer
from app.audit.writer import AUDIT_TABLE, AuditWriter
from app.errors import AuditUnavailable
from app.store.bulk import insert_rows
from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditChainHead, AuditDecision
from bench import audit_signing_env
from bench.audit_commit import _record
from tests.postgres import ThrowawayPostgres

REQUESTERS = [f"agency.requester-{n}" for n in range(40)]
HOLDERS = [f"agency.holder-{n}" for n in range(40)]
FIELDS = [f"field.group-{g}.item-{i}" for g in range(10) for i in range(8)]
PURPOSES = ["safeguarding.children", "safeguarding.adults", "crime-prevention", "early-help"]
REASONS = ["agreement", "field-not-covered", "purpose-not-covered", "no-agreement"]
WRITE_BATCH = 20_000
PG_WRITE_BATCH = 50_000  # rows per COPY and transaction in the PostgreSQL build
SPAN = timedelta(days=365)  # the PostgreSQL build's decided_at: the last year, up to now
BEFORE_PURGE_SECONDS = 5.0  # the writes' latency window before the purge starts
WRITER_WARMUP_SECONDS = 1.0
KEY_ENV = "ACCORD_AUDIT_SIGNING_KEY_FILE"


def _rows(
    count: int,
    persons: int,
    start: datetime,
    rng: random.Random,
    times: Sequence[datetime] | None = None,
) -> list[dict[str, Any]]:
    """`count` rows, decided at random in the year from `start`, or at `times` if given."""
    rows = []
    for index in range(count):
        reason = rng.choice(REASONS)
        decision_id = str(uuid.UUID(int=rng.getrandbits(128)))
        decided_at = (
            start + timedelta(seconds=rng.random() * 86_400 * 365)
            if times is None
            else times[index]
        )
        rows.append(
            {
                "decision_id": decision_id,
                "request_id": "bench",
                "decided_at": decided_at,
                "client": "bench-client",
                "requester": rng.choice(REQUESTERS),
                "holder": rng.choice(HOLDERS),
                "person_id": f"P-{rng.randrange(persons):07d}",
                "field": rng.choice(FIELDS),
                "purpose": rng.choice(PURPOSES),
                "decision": "permit" if reason == "agreement" else "deny",
                "reason": reason,
                "agreement_id": "isa-bench" if reason != "no-agreement" else None,
                "agreement_version": 1 if reason != "no-agreement" else None,
                "restriction_id": None,
                "consent_id": None,
                "break_glass": False,
                "justification": None,
                "user_ref": f"user-{rng.randrange(500)}",
                "case_ref": None,
                "policy_revision": 1,
                "obligations": [],
                "routes_offered": [],
            }
        )
    return rows


def _person_queries(engine: Engine, queries: int, persons: int, rng: random.Random) -> list[float]:
    """Milliseconds of each person query: the API's first page, 100 rows newest first."""
    query_ms = []
    with Session(engine) as session:
        for _ in range(queries):
            person = f"P-{rng.randrange(persons):07d}"
            began = time.perf_counter()
            search_decisions(session, where=AuditFilter(person_id=person), limit=100, cursor=None)
            query_ms.append((time.perf_counter() - began) * 1000)
    return sorted(query_ms)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Of sorted samples, as the SQLite mode takes p99 (0.0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * fraction) - 1))]


def _print_table(result: dict[str, Any]) -> None:
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


def _note(name: str, value: object) -> None:
    """One figure as soon as it is measured, so that a run cut short still reports it."""
    print(f"# {name}: {value}", flush=True)


def run_sqlite(args: argparse.Namespace) -> None:
    """The original mode: SQLite in a temporary folder, or the `--database-url` given."""
    persons = args.persons or max(args.rows // 50, 1)
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'audit.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    signer = AuditSigner(Ed25519PrivateKey.generate())  # each head signed, as the writer does
    started = time.perf_counter()
    seq, previous = 0, GENESIS
    while seq < args.rows:
        batch = _rows(min(WRITE_BATCH, args.rows - seq), persons, start, rng)
        chain_rows(batch, after_seq=seq, after_hash=previous)
        seq, previous = int(batch[-1]["seq"]), str(batch[-1]["row_hash"])
        with engine.begin() as connection:
            connection.execute(insert(AuditDecision), batch)
            connection.execute(
                update(AuditChainHead)
                .where(AuditChainHead.id == 1)
                .values(
                    last_seq=seq,
                    last_hash=previous,
                    signature=signer.sign(ChainHead(seq, previous).statement()),
                )
            )
    build_seconds = time.perf_counter() - started

    query_ms = _person_queries(engine, args.queries, persons, rng)

    began = time.perf_counter()
    with engine.connect() as connection:
        verification = verify_chain(connection, signer.keyring())
    verify_seconds = time.perf_counter() - began
    engine.dispose()
    assert verification.intact and verification.rows_checked == args.rows, verification

    result = {
        "backend": url.split(":", 1)[0],
        "rows": args.rows,
        "persons": persons,
        "build_seconds": round(build_seconds, 1),
        "person_query_p50_ms": round(statistics.median(query_ms), 3),
        "person_query_p99_ms": round(query_ms[int(len(query_ms) * 0.99) - 1], 3),
        "verify_seconds": round(verify_seconds, 1),
        "verify_rows_per_second": round(args.rows / verify_seconds),
    }
    _print_table(result)
    print(json.dumps(result))


# --- PostgreSQL -------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    """This process's peak RSS so far (getrusage; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _verifier_process(
    requests: Queue[tuple[str, str] | None], results: Queue[dict[str, Any]]
) -> None:
    """Full verifies (from the checkpoint or genesis to the head, hashes and signatures),
    as `accord audit verify` runs them, each asked by (url, key file), in a process of
    their own started before the build: its peak RSS is the verifies' own (ru_maxrss
    survives exec, so a process started after the build would inherit the build's)."""
    while (request := requests.get()) is not None:
        try:
            url, key_file = request
            signer = configured_signer(Path(key_file), unsigned=False)
            assert signer is not None
            engine = make_engine(url)
            rss_before = _peak_rss_mib()
            began = time.perf_counter()
            with engine.connect() as connection:
                verification = verify_chain(connection, signer.keyring())
            seconds = time.perf_counter() - began
            engine.dispose()
            broken = verification.broken
            results.put(
                {
                    "seconds": seconds,
                    "rows_checked": verification.rows_checked,
                    "last_seq": verification.last_seq,
                    "start_seq": verification.start_seq,
                    "intact": verification.intact,
                    "broken": None if broken is None else broken.problem,
                    "peak_rss_before_mib": round(rss_before, 1),
                    "peak_rss_mib": round(_peak_rss_mib(), 1),
                }
            )
        except Exception as exc:  # reported; the parent raises it
            results.put({"error": f"{type(exc).__name__}: {exc}"})


class _Verifier:
    """The verifier process, and asking it for one full verify at a time."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._requests: Queue[tuple[str, str] | None] = context.Queue()
        self._results: Queue[dict[str, Any]] = context.Queue()
        self._process = context.Process(
            target=_verifier_process, args=(self._requests, self._results), daemon=True
        )
        self._process.start()

    def verify(self, url: str, key_file: str) -> dict[str, Any]:
        self._requests.put((url, key_file))
        figures = self._results.get(timeout=6 * 3600)
        if "error" in figures:
            raise RuntimeError(f"the verify process failed: {figures['error']}")
        return figures

    def stop(self) -> None:
        self._requests.put(None)
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()


def _writer_process(
    url: str,
    key_file: str,
    callers: int,
    ready: Event,
    stop: Event,
    results: Queue[dict[str, Any]],
) -> None:
    """Decisions continuing: a real AuditWriter (as a replica makes it: its own engine,
    the deployment's key) taking one-row writes from `callers` asyncio callers until
    `stop`; puts each write's (wall time asked, seconds to acknowledge) and the failures."""
    try:
        signer = configured_signer(Path(key_file), unsigned=False)
        engine = make_engine(url, write_lock_at_begin=True)
        writer = AuditWriter(engine, signer=signer, max_batch_rows=1000, timeout_seconds=30)
        writer.start()
        samples: list[tuple[float, float]] = []
        failures = 0

        async def caller() -> None:
            nonlocal failures
            while not stop.is_set():
                asked_at, asked = time.time(), time.perf_counter()
                try:
                    await writer.write([_record().model_dump()])
                except AuditUnavailable:
                    failures += 1
                    continue
                samples.append((asked_at, time.perf_counter() - asked))

        async def drive() -> None:
            tasks = [asyncio.create_task(caller()) for _ in range(callers)]
            ready.set()
            await asyncio.gather(*tasks)

        try:
            asyncio.run(drive())
        finally:
            writer.stop()
            engine.dispose()
        results.put({"samples": samples, "failures": failures, "commits": writer.commits})
    except BaseException as exc:
        ready.set()
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _latency_ms(samples: Sequence[tuple[float, float]], since: float, until: float) -> list[float]:
    return sorted(1000 * seconds for asked_at, seconds in samples if since <= asked_at < until)


def _purge_under_load(
    engine: Engine, url: str, key_file: str, signer: AuditSigner, before: datetime, callers: int
) -> dict[str, Any]:
    """Drop the month(s) before `before` while the writer process keeps writing."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    results: Queue[dict[str, Any]] = context.Queue()
    process = context.Process(
        target=_writer_process, args=(url, key_file, callers, ready, stop, results)
    )
    process.start()
    try:
        if not ready.wait(timeout=300):
            raise RuntimeError("the writer process did not start")
        time.sleep(WRITER_WARMUP_SECONDS + BEFORE_PURGE_SECONDS)
        purge_started, began = time.time(), time.perf_counter()
        purge = purge_before(engine, before=before, actor="bench", signer=signer, whole_months=True)
        purge_seconds = time.perf_counter() - began
        purge_ended = time.time()
        time.sleep(0.5)
    finally:
        stop.set()
    try:
        load = results.get(timeout=300)
    finally:
        process.join(timeout=60)
    if "error" in load:
        raise RuntimeError(f"the writer process failed: {load['error']}")
    ahead = _latency_ms(load["samples"], purge_started - BEFORE_PURGE_SECONDS, purge_started)
    during = _latency_ms(load["samples"], purge_started, purge_ended)
    return {
        "purge_seconds": round(purge_seconds, 2),
        "purge_rows_removed": 0 if purge is None else purge.rows_removed,
        "purge_last_seq": 0 if purge is None else purge.last_seq,
        "writes_before_purge": len(ahead),
        "write_before_purge_p50_ms": round(_percentile(ahead, 0.5), 2),
        "write_before_purge_p99_ms": round(_percentile(ahead, 0.99), 2),
        "writes_during_purge": len(during),
        "write_during_purge_p50_ms": round(_percentile(during, 0.5), 2),
        "write_during_purge_p99_ms": round(_percentile(during, 0.99), 2),
        "write_during_purge_max_ms": round(during[-1], 2) if during else 0.0,
        "writes_total": len(load["samples"]),
        "write_failures": load["failures"],
    }


def _months(first: datetime, last: datetime) -> int:
    """How many months after `first`'s month `last`'s month is."""
    return (last.year - first.year) * 12 + last.month - first.month


def run_postgresql(args: argparse.Namespace) -> None:
    persons = args.persons or max(args.rows // 50, 1)
    postgres = None
    if args.database_url:
        url = args.database_url
    else:
        postgres = ThrowawayPostgres()
        postgres.start()
        url = postgres.new_database()
    verifier = _Verifier()  # before the build: see _verifier_process
    try:
        _postgresql(args, url, persons, verifier)
    finally:
        verifier.stop()
        if postgres is not None:
            postgres.stop()


def _postgresql(args: argparse.Namespace, url: str, persons: int, verifier: _Verifier) -> None:
    upgrade_schema(url)
    engine = make_engine(url)
    key_file = audit_signing_env()[KEY_ENV]
    signer = configured_signer(Path(key_file), unsigned=False)
    assert signer is not None
    rng = random.Random(7)
    rows = args.rows
    now = datetime.now(UTC).replace(microsecond=0)
    last_at = now - timedelta(minutes=1)  # the newest row; the writer's rows come after
    first_at = last_at - SPAN
    step = SPAN / max(rows - 1, 1)  # decided_at evenly spread, in seq order
    newest_day = last_at - timedelta(days=1)  # rows decided after it: the newest day's
    # every month the rows span, and the months ahead of now, as the service keeps them
    made = ensure_partitions(engine, first_at, months_ahead=_months(first_at, now) + MONTHS_AHEAD)
    _note("partitions made", len(made))

    started = time.perf_counter()
    seq, previous = 0, GENESIS
    before_day: tuple[int, str] = (0, GENESIS)  # the last row before the newest day
    while seq < rows:
        count = min(PG_WRITE_BATCH, rows - seq)
        times = [first_at + step * (seq + offset) for offset in range(count)]
        batch = _rows(count, persons, first_at, rng, times)
        chain_rows(batch, after_seq=seq, after_hash=previous)
        for row in batch:
            if row["decided_at"] <= newest_day:
                before_day = (int(row["seq"]), str(row["row_hash"]))
        seq, previous = int(batch[-1]["seq"]), str(batch[-1]["row_hash"])
        with engine.begin() as connection:
            insert_rows(connection, AUDIT_TABLE, batch)  # COPY
            connection.execute(
                update(AuditChainHead)
                .where(AuditChainHead.id == 1)
                .values(
                    last_seq=seq,
                    last_hash=previous,
                    signature=signer.sign(ChainHead(seq, previous).statement()),
                )
            )
        del batch, times
        if seq % 1_000_000 < PG_WRITE_BATCH:
            _note("built", f"{seq} rows in {time.perf_counter() - started:.0f} s")
    build_seconds = time.perf_counter() - started
    build_rss_mib = _peak_rss_mib()
    _note("build_seconds", round(build_seconds, 1))

    began = time.perf_counter()  # as autovacuum would, sooner: the planner's statistics
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE audit_decisions")
        partitions = len(list_partitions(connection))
    analyze_seconds = time.perf_counter() - began
    _note("analyze_seconds", round(analyze_seconds, 1))

    query_ms = _person_queries(engine, args.queries, persons, rng)
    _note("person_query_p50_ms", round(statistics.median(query_ms), 3))

    full = verifier.verify(url, key_file)
    assert full["intact"] and full["rows_checked"] == rows, full
    _note("full_verify", full)

    # The newest day: a signed record that the chain is proven up to the last row before
    # it (the full verify above proved it; a nightly verify would have recorded it), then
    # a verify that walks only the rows after that record.
    cut_seq, cut_hash = before_day
    recorded = record_verification(
        engine,
        Verification(cut_seq, cut_seq, None, last_hash=cut_hash),
        signer=signer,
        actor="bench",
    )
    assert recorded is not None or cut_seq == 0
    began = time.perf_counter()
    with engine.connect() as connection:
        newest = verify_chain(connection, signer.keyring(), since_verified=True)
    newest_seconds = time.perf_counter() - began
    assert newest.intact and newest.rows_checked == rows - cut_seq, newest
    _note("newest_day_verify", f"{newest.rows_checked} rows in {newest_seconds:.3f} s")

    oldest_month = month_start(first_at)
    purge_to = next_month(oldest_month)
    purged = _purge_under_load(engine, url, key_file, signer, purge_to, args.callers)
    _note("purge", purged)

    after = verifier.verify(url, key_file)  # what is left: from the purge's checkpoint
    with engine.connect() as connection:
        remaining = int(connection.scalar(select(func.count()).select_from(AuditDecision)) or 0)
    engine.dispose()
    intact_after = bool(
        after["intact"]
        and after["start_seq"] == purged["purge_last_seq"]
        and after["rows_checked"] == remaining
    )

    result = {
        "backend": "postgresql",
        "rows": rows,
        "persons": persons,
        "partitions": partitions,
        "build_seconds": round(build_seconds, 1),
        "build_rows_per_second": round(rows / build_seconds),
        "build_peak_rss_mib": round(build_rss_mib, 1),
        "analyze_seconds": round(analyze_seconds, 1),
        "person_queries": len(query_ms),
        "person_query_p50_ms": round(statistics.median(query_ms), 3),
        "person_query_p99_ms": round(_percentile(query_ms, 0.99), 3),
        "newest_day_verify_rows": newest.rows_checked,
        "newest_day_verify_seconds": round(newest_seconds, 3),
        "verify_seconds": round(full["seconds"], 1),
        "verify_rows_per_second": round(rows / full["seconds"]),
        # the verifier process's peak RSS (getrusage) before its first verify, and after
        "verifier_rss_at_start_mib": full["peak_rss_before_mib"],
        "verify_peak_rss_mib": full["peak_rss_mib"],
        "purged_month": oldest_month.strftime("%Y-%m"),
        "writer_callers": args.callers,
        **purged,
        "verify_after_purge_seconds": round(after["seconds"], 1),
        "verify_after_purge_rows": after["rows_checked"],
        "verify_after_purge_peak_rss_mib": after["peak_rss_mib"],
        "chain_intact_after_purge": intact_after,
        "chain_verified": bool(full["intact"] and newest.intact and intact_after),
    }
    _print_table(result)
    print(json.dumps(result))
    if not result["chain_verified"]:
        print(f"CHAIN CHECK FAILED after the purge: {after}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--persons", type=int, default=0, help="default: rows / 50")
    parser.add_argument(
        "--database-url",
        help="default: SQLite in a temporary folder; with --backend postgresql, a throwaway "
        "PostgreSQL (or an empty database given here)",
    )
    parser.add_argument("--queries", type=int, default=200, help="person queries to time")
    parser.add_argument(
        "--callers", type=int, default=20, help="postgresql: writers' callers during the purge"
    )
    args = parser.parse_args()
    if args.backend == "postgresql":
        run_postgresql(args)
    else:
        run_sqlite(args)


if __name__ == "__main__":
    main()
