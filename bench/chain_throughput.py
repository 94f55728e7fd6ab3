"""Audit chain throughput across replicas: 1, 2 and 4 writer processes on one PostgreSQL.

    python -m bench.chain_throughput                                 # 10 s per load
    python -m bench.chain_throughput [--seconds 10] [--processes 1 2 4]
    python -m bench.chain_throughput --seconds 1 --processes 1 2     # a smoke run

Each process stands for one replica: its own engine, made as app/main.py makes the
audit writer's (`make_engine(url, write_lock_at_begin=True)`), and its own AuditWriter
signing every head it writes with the one deployment key (bench.audit_signing_env),
fed by `--callers` asyncio tasks that each write one decision's row at a time
(`await writer.write([row])`) or, in the batch load, 20 rows at a time as a batch
request does. All of them write into one throwaway PostgreSQL (initdb/pg_ctl,
tests/postgres.py; needs PostgreSQL installed), so their commits take turns on the
chain head's row lock (SELECT ... FOR UPDATE). The processes (multiprocessing, spawn)
start together, warm up for `--warmup` seconds, then count for `--seconds`: rows
acknowledged, commits, rows per commit, the time each commit held the head row's lock
(from its SELECT ... FOR UPDATE returning to its COMMIT returning, timed by wrapping the
process's own engine dialect; the app's code is unchanged) and the CPU the machine, the
writer processes and the PostgreSQL server used (/proc; "other cores" is anything else
running meanwhile, which skews the figures on a shared machine). Afterwards the chain
must verify (hashes and signatures), seq must run from 1 without a gap, and each
process's rows in the table must equal the rows it was told were committed; otherwise
the exit status is 1.
Not part of `make bench` (a smoke run is in the suite). Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select

from app.audit.integrity import verify_chain
from app.audit.record import AuditRow
from app.audit.signing import KeyRing, configured_signer
from app.audit.writer import AuditWriter
from app.errors import AuditUnavailable
from app.main import SWITCH_INTERVAL_SECONDS
from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditDecision
from bench import audit_signing_env
from bench.audit_commit import _record
from tests.postgres import ThrowawayPostgres

KEY_ENV = "ACCORD_AUDIT_SIGNING_KEY_FILE"
BATCH_ROWS = 20  # the batch load: rows per write, as a batch request of 20 fields
# Writer settings as served (app/config.py), but a longer timeout: a write that timed out
# may still commit, and this benchmark counts rows, not 503s (any failure is reported).
MAX_BATCH_ROWS = 1000
TIMEOUT_SECONDS = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    """What one writer process does."""

    url: str
    key_file: str
    index: int
    rows_per_write: int
    callers: int
    warmup: float
    seconds: float

    @property
    def tag(self) -> str:
        """The request_id of this process's rows: its rows are counted by it."""
        return f"chain-bench-p{self.index}"


class LockClock:
    """How long each of the writer's commits held the chain head's row lock: from its
    SELECT ... FOR UPDATE returning (the lock granted) to its COMMIT returning (the lock
    released), how long the SELECT took (mostly waiting for the lock), and where the hold
    went: in the INSERT and UPDATE statements, in the COMMIT (the WAL flush), and the rest
    in the writer's Python between them (hashing, parameters, signing, and waiting for the
    GIL, which the process's event loop shares), with the writer thread's CPU time in it.
    Timed on the client: a hold starts after the lock is granted and ends after the COMMIT's
    answer arrives (and the thread has the GIL back), so processes' holds can overlap a
    little. Wraps the engine's own dialect (one per engine): no app code changes; only the
    audit writer's thread uses this engine, so one transaction is open at a time."""

    def __init__(self, engine: Engine) -> None:
        self.waited = 0.0  # seconds, summed over commits
        self.held = 0.0
        self.in_statements = 0.0
        self.in_commit = 0.0
        self.cpu_held = 0.0  # the writer thread's CPU time while holding the lock
        self.commits = 0
        self.recording = False  # set by the event loop during the measured window
        self.held_samples: list[float] = []
        self._locked_at: float | None = None
        self._cpu_at = 0.0
        dialect = engine.dialect
        execute: Callable[..., None] = dialect.do_execute
        commit: Callable[[Any], None] = dialect.do_commit

        def timed_execute(
            cursor: Any, statement: str, parameters: Any, context: Any = None
        ) -> None:
            asked = time.perf_counter()
            execute(cursor, statement, parameters, context)
            answered = time.perf_counter()
            if "FOR UPDATE" in statement:  # only the writer's read of the head locks
                self._locked_at, self._cpu_at = answered, time.thread_time()
                self.waited += answered - asked
            elif self._locked_at is not None:
                self.in_statements += answered - asked

        def timed_commit(dbapi_connection: Any) -> None:
            asked = time.perf_counter()
            commit(dbapi_connection)
            answered = time.perf_counter()
            if self._locked_at is None:
                return
            held = answered - self._locked_at
            self.cpu_held += time.thread_time() - self._cpu_at
            self._locked_at = None
            self.in_commit += answered - asked
            self.held += held
            self.commits += 1
            if self.recording:
                self.held_samples.append(held)

        dialect.do_execute = timed_execute  # type: ignore[method-assign]
        dialect.do_commit = timed_commit  # type: ignore[method-assign]


@dataclass
class Tally:
    acknowledged: int = 0  # rows whose write returned: committed
    failures: int = 0  # writes that raised AuditUnavailable
    counting: bool = False
    latencies: list[float] = field(default_factory=list)  # writes acknowledged in the window


def _histogram(name: str) -> tuple[float, float]:
    """(sum, count) of one of this process's histograms (the writer's own metrics)."""
    total = REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    return total, count


def _snapshot(writer: AuditWriter, clock: LockClock, tally: Tally) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    commit_sum, commit_count = _histogram("accord_audit_commit_seconds")
    batch_sum, batch_count = _histogram("accord_audit_batch_rows")
    return {
        "time": time.time(),
        "rows": tally.acknowledged,
        "commits": writer.commits,
        "commit_seconds_sum": commit_sum,
        "commit_seconds_count": commit_count,
        "batch_rows_sum": batch_sum,
        "batch_rows_count": batch_count,
        "lock_held": clock.held,
        "lock_waited": clock.waited,
        "lock_in_statements": clock.in_statements,
        "lock_in_commit": clock.in_commit,
        "lock_cpu": clock.cpu_held,
        "lock_commits": clock.commits,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


async def _sleep_until(wall_time: float) -> None:
    await asyncio.sleep(max(0.0, wall_time - time.time()))


async def _drive(
    writer: AuditWriter, clock: LockClock, load: Load, start_at: float
) -> dict[str, Any]:
    window_start = start_at + load.warmup
    end_at = window_start + load.seconds
    tally = Tally()

    async def caller() -> None:
        while time.time() < end_at:
            rows: list[AuditRow] = []
            for _ in range(load.rows_per_write):
                row = _record().model_dump()
                row["request_id"] = load.tag
                rows.append(row)
            asked = time.perf_counter()
            try:
                await writer.write(rows)
            except AuditUnavailable:
                tally.failures += 1
                continue
            tally.acknowledged += len(rows)
            if tally.counting:
                tally.latencies.append(time.perf_counter() - asked)

    await _sleep_until(start_at)
    callers = [asyncio.create_task(caller()) for _ in range(load.callers)]
    await _sleep_until(window_start)
    before = _snapshot(writer, clock, tally)
    tally.counting = clock.recording = True
    await _sleep_until(end_at)
    after = _snapshot(writer, clock, tally)
    tally.counting = clock.recording = False
    await asyncio.gather(*callers)
    return {
        "index": load.index,
        "tag": load.tag,
        "window": {key: after[key] - before[key] for key in before},
        "acknowledged": tally.acknowledged,
        "failures": tally.failures,
        "latencies": tally.latencies,
        "held_samples": clock.held_samples,
    }


def writer_process(
    load: Load,
    ready: Barrier,
    go: Event,
    start_at: Synchronized[float],
    results: Queue[dict[str, Any]],
) -> None:
    """One replica's audit writer under load; puts its figures (or its error) on `results`."""
    try:
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # as a served process sets it
        signer = configured_signer(Path(load.key_file), unsigned=False)
        engine = make_engine(load.url, write_lock_at_begin=True)
        clock = LockClock(engine)
        writer = AuditWriter(
            engine, signer=signer, max_batch_rows=MAX_BATCH_ROWS, timeout_seconds=TIMEOUT_SECONDS
        )
        writer.start()
        try:
            ready.wait(timeout=300)
            if not go.wait(timeout=300):
                raise RuntimeError("never told to start")
            results.put(asyncio.run(_drive(writer, clock, load, start_at.value)))
        finally:
            writer.stop()
            engine.dispose()
    except BaseException as exc:
        results.put({"index": load.index, "error": f"{type(exc).__name__}: {exc}"})
        ready.abort()  # the parent stops waiting for this process
        raise


def _server_ticks(postgres: ThrowawayPostgres) -> dict[int, int]:
    """CPU time (user + system, in clock ticks) of each process of this benchmark's
    PostgreSQL server (its postmaster and the postmaster's children), by pid."""
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process has ended
            continue
        pid = int(text.split(" ", 1)[0])
        fields = text.rpartition(") ")[2].split()  # after the command name: state, ppid, ...
        if pid == postmaster or int(fields[1]) == postmaster:
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def _cpu_times() -> tuple[int, int, int]:
    """(total, busy, iowait) clock ticks of the whole machine, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    idle, iowait = values[3], values[4]
    return total, total - idle - iowait, iowait


def _check(url: str, keys: KeyRing, acknowledged: dict[str, int]) -> dict[str, Any]:
    """Is the chain intact across every process's rows, seq without a gap from 1, and are
    each process's rows exactly the rows it was told were committed?"""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:  # as `accord audit verify` calls it
            verification = verify_chain(connection, keys)
        with engine.connect() as connection:
            rows, lowest, highest = connection.execute(
                select(func.count(), func.min(AuditDecision.seq), func.max(AuditDecision.seq))
            ).one()
            by_process = {
                str(tag): int(count)
                for tag, count in connection.execute(
                    select(AuditDecision.request_id, func.count()).group_by(
                        AuditDecision.request_id
                    )
                ).all()
            }
    finally:
        engine.dispose()
    gapless = rows > 0 and lowest == 1 and highest == rows  # seq is the primary key: unique
    checks = {
        "intact": verification.intact,
        "broken": None if verification.broken is None else verification.broken.problem,
        "rows": int(rows),
        "rows_verified": verification.rows_checked,
        "head_seq": verification.last_seq,
        "acknowledged": sum(acknowledged.values()),
        "seq_gapless": gapless,
        "rows_equal_acknowledged": by_process == acknowledged,
    }
    checks["ok"] = bool(
        checks["intact"]
        and gapless
        and checks["rows_equal_acknowledged"]
        and verification.rows_checked == verification.last_seq == rows
    )
    return checks


def _percentile(samples: Sequence[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_load(
    postgres: ThrowawayPostgres,
    key_file: str,
    keys: KeyRing,
    processes: int,
    rows_per_write: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """`processes` writers on a fresh database; their figures, summed, and the checks."""
    url = postgres.new_database()
    upgrade_schema(url)
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(processes + 1)
    go = context.Event()
    start_at: Synchronized[float] = context.Value("d", 0.0)
    results: Queue[dict[str, Any]] = context.Queue()
    loads = [
        Load(url, key_file, index, rows_per_write, args.callers, args.warmup, args.seconds)
        for index in range(processes)
    ]
    workers = [
        context.Process(target=writer_process, args=(load, ready, go, start_at, results))
        for load in loads
    ]
    for worker in workers:
        worker.start()
    try:
        try:
            ready.wait(timeout=300)  # every process has its engine, signer and writer
        except threading.BrokenBarrierError:
            reported = [results.get(timeout=10) for _ in range(results.qsize())]
            raise RuntimeError(f"a writer process did not start: {reported}") from None
        start_at.value = time.time() + 0.5
        go.set()
        time.sleep(max(0.0, start_at.value + args.warmup - time.time()))
        cpu_before, server_before = _cpu_times(), _server_ticks(postgres)
        time.sleep(max(0.0, start_at.value + args.warmup + args.seconds - time.time()))
        cpu_after, server_after = _cpu_times(), _server_ticks(postgres)
        figures = [results.get(timeout=300) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    errors = [f"process {f['index']}: {f['error']}" for f in figures if "error" in f]
    if errors:
        raise RuntimeError("; ".join(errors))
    figures.sort(key=lambda f: int(f["index"]))
    checks = _check(url, keys, {f["tag"]: f["acknowledged"] for f in figures})
    windows = [f["window"] for f in figures]
    rates = [w["rows"] / w["time"] for w in windows]
    rows = sum(w["rows"] for w in windows)
    commits = sum(w["commits"] for w in windows)
    lock_commits = sum(w["lock_commits"] for w in windows)
    commit_count = sum(w["commit_seconds_count"] for w in windows)
    seconds = statistics.fmean(w["time"] for w in windows)
    held = [sample for f in figures for sample in f["held_samples"]]
    latencies = [sample for f in figures for sample in f["latencies"]]
    postgres_ticks = sum(ticks - server_before.get(pid, 0) for pid, ticks in server_after.items())
    total, busy, iowait = (
        after - before for after, before in zip(cpu_after, cpu_before, strict=True)
    )
    return {
        "rows_per_write": rows_per_write,
        "processes": processes,
        "decisions_per_s": round(sum(rates)),
        "per_process_decisions_per_s": round(sum(rates) / processes),
        "each_process_decisions_per_s": [round(rate) for rate in rates],
        "writes_per_s": round(sum(rates) / rows_per_write),
        "commits_per_s": round(sum(w["commits"] / w["time"] for w in windows)),
        "rows_per_commit": round(rows / commits, 1) if commits else 0.0,
        "mean_batch_rows_histogram": round(
            sum(w["batch_rows_sum"] for w in windows)
            / max(1.0, sum(w["batch_rows_count"] for w in windows)),
            1,
        ),
        # From the SELECT ... FOR UPDATE returning to COMMIT returning, per commit.
        "lock_held_ms_mean": round(1000 * sum(w["lock_held"] for w in windows) / lock_commits, 3)
        if lock_commits
        else 0.0,
        # Where the hold went, per commit: INSERT and UPDATE, COMMIT, and the Python between.
        **_split(windows, lock_commits),
        "lock_held_ms_p50": round(1000 * _percentile(held, 0.5), 3),
        "lock_held_ms_p99": round(1000 * _percentile(held, 0.99), 3),
        # The share of the window in which some process held the head lock (it is exclusive).
        "lock_utilisation": round(sum(w["lock_held"] for w in windows) / seconds, 3),
        "lock_wait_ms_mean": round(1000 * sum(w["lock_waited"] for w in windows) / lock_commits, 3)
        if lock_commits
        else 0.0,
        # AUDIT_COMMIT_SECONDS: BEGIN, waiting for the lock, holding it, COMMIT.
        "commit_ms_mean_histogram": round(
            1000 * sum(w["commit_seconds_sum"] for w in windows) / commit_count, 3
        )
        if commit_count
        else 0.0,
        "write_ms_p50": round(1000 * _percentile(latencies, 0.5), 2),
        "write_ms_p99": round(1000 * _percentile(latencies, 0.99), 2),
        "cpu_busy": round(busy / total, 3) if total else 0.0,  # of all the machine's cores
        "cpu_iowait": round(iowait / total, 3) if total else 0.0,
        "writer_processes_cpu_cores": round(sum(w["cpu"] for w in windows) / seconds, 2),
        # PostgreSQL's processes (a backend per writer, the WAL writer, the checkpointer, ...)
        "postgres_cpu_cores": round(postgres_ticks / CLOCK_TICKS / seconds, 2),
        # Anything else busy meanwhile (another job on the machine skews the figures).
        "other_cpu_cores": round(
            (busy - postgres_ticks) / CLOCK_TICKS / seconds
            - sum(w["cpu"] for w in windows) / seconds,
            2,
        ),
        "failures": sum(int(f["failures"]) for f in figures),
        "check": checks,
    }


def _split(windows: list[dict[str, float]], commits: int) -> dict[str, float]:
    def per_commit_ms(key: str) -> float:
        return round(1000 * sum(w[key] for w in windows) / commits, 3) if commits else 0.0

    held, statements, commit = (
        per_commit_ms(key) for key in ("lock_held", "lock_in_statements", "lock_in_commit")
    )
    return {
        "lock_in_statements_ms": statements,
        "lock_in_commit_ms": commit,
        "lock_in_python_ms": round(held - statements - commit, 3),
        "lock_writer_thread_cpu_ms": per_commit_ms("lock_cpu"),
    }


def _table(rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    cells = [[str(row[key]) for key in columns] for row in rows]
    widths = [
        max(len(title), *(len(line[i]) for line in cells))
        for i, title in enumerate(columns.values())
    ]
    print(
        "  ".join(title.rjust(width) for title, width in zip(columns.values(), widths, strict=True))
    )
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per load")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers per process")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--rows-per-write", type=int, nargs="+", default=[1, BATCH_ROWS], help="the loads"
    )
    args = parser.parse_args()

    key_file = audit_signing_env()[KEY_ENV]
    signer = configured_signer(Path(key_file), unsigned=False)
    assert signer is not None
    postgres = ThrowawayPostgres()
    postgres.start()
    results: list[dict[str, Any]] = []
    try:
        for rows_per_write in args.rows_per_write:
            alone: float | None = None
            for processes in args.processes:
                row = run_load(
                    postgres, key_file, signer.keyring(), processes, rows_per_write, args
                )
                if processes == 1:
                    alone = row["decisions_per_s"]
                row["scaling_vs_1"] = round(row["decisions_per_s"] / alone, 2) if alone else None
                results.append(row)
    finally:
        postgres.stop()

    cpus = os.cpu_count()
    print(
        f"{cpus} cores (os.cpu_count); {args.callers} callers per process; "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s measured per load"
    )
    shown = [
        {
            **row,
            "verified": "yes" if row["check"]["ok"] else "NO",
            "cpu_busy_pct": f"{row['cpu_busy']:.0%}",
            "iowait_pct": f"{row['cpu_iowait']:.0%}",
            "lock_util_pct": f"{row['lock_utilisation']:.0%}",
        }
        for row in results
    ]
    _table(
        shown,
        {
            "rows_per_write": "rows/write",
            "processes": "procs",
            "decisions_per_s": "decisions/s",
            "per_process_decisions_per_s": "per proc",
            "scaling_vs_1": "vs 1 proc",
            "commits_per_s": "commits/s",
            "rows_per_commit": "rows/commit",
            "write_ms_p50": "write p50 ms",
            "write_ms_p99": "write p99 ms",
            "verified": "verified",
        },
    )
    print()
    _table(
        shown,
        {
            "rows_per_write": "rows/write",
            "processes": "procs",
            "lock_held_ms_mean": "lock held ms",
            "lock_held_ms_p99": "held p99 ms",
            "lock_in_statements_ms": "in SQL ms",
            "lock_in_commit_ms": "in COMMIT ms",
            "lock_in_python_ms": "in Python ms",
            "lock_writer_thread_cpu_ms": "writer CPU ms",
            "lock_util_pct": "lock util",
            "lock_wait_ms_mean": "lock wait ms",
            "commit_ms_mean_histogram": "commit ms (hist)",
            "cpu_busy_pct": "CPU busy",
            "iowait_pct": "iowait",
            "writer_processes_cpu_cores": "writers cores",
            "postgres_cpu_cores": "postgres cores",
            "other_cpu_cores": "other cores",
        },
    )
    failed = [row for row in results if not row["check"]["ok"] or row["failures"]]
    for row in failed:
        print(
            f"CHECK FAILED ({row['rows_per_write']} rows/write, {row['processes']} processes): "
            f"{row['check']}, {row['failures']} failed writes"
        )
    print(
        json.dumps(
            {
                "chain_throughput": {
                    "cpus": cpus,
                    "seconds": args.seconds,
                    "warmup_seconds": args.warmup,
                    "callers_per_process": args.callers,
                    "max_batch_rows": MAX_BATCH_ROWS,
                    "all_verified": not failed,
                    "loads": results,
                }
            }
        )
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
