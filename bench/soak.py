"""Soak: `accord serve` at a steady decision rate for minutes; memory, descriptors, audit rows.

    python -m bench.soak                                  # SQLite, 200 decisions/s, 10 minutes
    python -m bench.soak --backend postgresql             # a throwaway PostgreSQL (initdb/pg_ctl)
    python -m bench.soak --minutes 0.1 --sample-seconds 2 # a smoke run

The server decides on the sample Riverton partnership (`policies/`). Requests
arrive open-loop at `--rate` decisions per second, half of the decisions as
single requests and half in batches of `--batch-fields` fields, for random
persons (out of `--persons`) and random fields, so any cache that grows with
what it is asked about shows. Every `--sample-seconds` the server process's
resident memory (VmRSS), open file descriptors (/proc/PID/fd), threads and CPU
are sampled, with the decisions answered, the latency and the errors of that
interval, and the machine's load average (the server shares its cores). At
the end the audit table must hold exactly one row per decision answered, every
answered decision_id among them, and `accord audit verify` must find the chain
intact; otherwise the exit status is 1.
Not part of the suite (a smoke run is). Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditDecision
from bench import audit_signing_env
from tests.postgres import ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
ACCORD = [sys.executable, "-m", "app.cli"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _templates() -> tuple[list[dict[str, Any]], list[str]]:
    """Requester, holder, purpose and person attributes from the sample policy tests,
    and every leaf field of the sample vocabulary."""
    tests = yaml.safe_load((REPO / "policies" / "tests" / "riverton.yaml").read_text())
    templates = [
        json.loads(json.dumps(case["request"], default=str))  # birth dates as ISO text
        for case in tests["cases"]
        if "status" not in case["expect"]
    ]
    vocabulary = yaml.safe_load((REPO / "policies" / "vocabulary.yaml").read_text())
    ids = [entry["id"] for entry in vocabulary["fields"]]
    leaves = [name for name in ids if not any(other.startswith(name + ".") for other in ids)]
    return templates, leaves


@dataclass
class Interval:
    """What the load saw since the last sample."""

    decisions: int = 0
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class Totals:
    answered: set[str] = field(default_factory=set)
    errors: int = 0
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def _process_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mib": round(int(values["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(values["Threads"]),
        "cpu_s": (int(stat[11]) + int(stat[12])) / CLOCK_TICKS,  # utime + stime
    }


async def _one(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], interval: Interval, totals: Totals
) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        interval.errors += 1
        totals.errors += 1
        name = type(exc).__name__
        totals.statuses[name] = totals.statuses.get(name, 0) + 1
        return
    interval.latencies_ms.append((time.perf_counter() - started) * 1000)
    interval.requests += 1
    totals.requests += 1
    status = str(response.status_code)
    totals.statuses[status] = totals.statuses.get(status, 0) + 1
    if response.status_code != 200:
        interval.errors += 1
        totals.errors += 1
        return
    payload = response.json()
    answers = payload.get("decisions", [payload])
    interval.decisions += len(answers)
    totals.answered.update(answer["decision_id"] for answer in answers)


async def _drive(
    args: argparse.Namespace, base_url: str, key: str, pid: int
) -> tuple[list[dict[str, Any]], Totals]:
    templates, leaves = _templates()
    chooser = random.Random(args.seed)
    totals, interval = Totals(), Interval()
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    seconds = args.minutes * 60
    last_cpu = _process_figures(pid)["cpu_s"]
    last_at = start

    def sample() -> None:
        nonlocal interval, last_cpu, last_at
        now = loop.time()
        figures = _process_figures(pid)
        done, interval = interval, Interval()
        latencies = sorted(done.latencies_ms)
        samples.append(
            {
                "elapsed_s": round(now - start),
                "rss_mib": figures["rss_mib"],
                "fds": figures["fds"],
                "threads": figures["threads"],
                "cpu_pct": round(100 * (figures["cpu_s"] - last_cpu) / max(now - last_at, 1e-9)),
                "decisions_per_s": round(done.decisions / max(now - last_at, 1e-9), 1),
                "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1)
                if latencies
                else None,
                "errors": done.errors,
                "answered_total": len(totals.answered),
                "load1": round(os.getloadavg()[0], 1),  # the machine's, other work included
            }
        )
        last_cpu, last_at = figures["cpu_s"], now

    sample()  # the baseline, before any load
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
        limits=limits,
    ) as client:
        in_flight: set[asyncio.Task[None]] = set()
        scheduled = 0  # decisions asked for so far; each request is due at scheduled / rate
        turn = 0
        next_sample = start + args.sample_seconds
        while scheduled / args.rate < seconds:
            due, now = start + scheduled / args.rate, loop.time()
            if now >= next_sample:
                sample()
                next_sample += args.sample_seconds
                continue
            if now < due:
                await asyncio.sleep(min(due, next_sample) - now)
                continue
            template = chooser.choice(templates)
            body = {
                "requester": template["requester"],
                "holder": template["holder"],
                "purpose": template["purpose"],
                "subject": {
                    "id": f"P-{chooser.randrange(args.persons)}",
                    "attributes": template["subject"].get("attributes", {}),
                },
                "context": {"user": "soak", "case_ref": f"SOAK-{turn}"},
            }
            if turn % (args.batch_fields + 1) == 0:  # one batch, then as many singles
                path = "/v1/decisions/batch"
                body["fields"] = chooser.sample(leaves, args.batch_fields)
                scheduled += args.batch_fields
            else:
                path = "/v1/decisions"
                body["field"] = chooser.choice(leaves)
                scheduled += 1
            turn += 1
            task = asyncio.create_task(_one(client, path, body, interval, totals))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)
    sample()  # the end of the load
    return samples, totals


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("accord serve exited at start")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("accord serve did not become ready")


def _run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        command, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _audit(url: str, answered: set[str]) -> tuple[int, int]:
    """(rows in the audit table, answered decisions missing from it)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = int(session.scalar(select(func.count()).select_from(AuditDecision)) or 0)
            recorded = set(session.scalars(select(AuditDecision.decision_id)))
    finally:
        engine.dispose()
    return rows, len(answered - recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=200.0, help="decisions per second")
    parser.add_argument("--batch-fields", type=int, default=10, help="fields per batch request")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="sampling interval")
    parser.add_argument("--persons", type=int, default=100_000, help="distinct persons asked for")
    parser.add_argument("--connections", type=int, default=64, help="most requests in flight")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    postgres = None
    folder = Path(tempfile.mkdtemp(prefix="accord-soak-"))
    if args.backend == "postgresql":
        postgres = ThrowawayPostgres()
        postgres.start()
        url = postgres.new_database()
    else:
        url = f"sqlite:///{folder / 'soak.db'}"
    port = _free_port()
    env = {"ACCORD_DATABASE_URL": url, "ACCORD_LOG_LEVEL": "warning", **audit_signing_env()}
    log_path = folder / "server.log"
    try:
        upgrade_schema(url)
        _run([*ACCORD, "agreements", "import", str(REPO / "policies" / "agreements")], env)
        key_file = folder / "key"
        _run(
            [
                *ACCORD,
                "clients",
                "create",
                "--id",
                "soak",
                "--scopes",
                "decide:any",
                "--agencies",
                "police.riverton",
                "--key-file",
                str(key_file),
            ],
            env,
        )
        key = key_file.read_text().strip()
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [*ACCORD, "serve", "--port", str(port)],
                env={**os.environ, **env},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base_url, server)
            samples, totals = asyncio.run(_drive(args, base_url, key, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=60)
        rows, missing = _audit(url, totals.answered)
        verify = subprocess.run(
            [*ACCORD, "audit", "verify"],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    finally:
        if postgres is not None:
            postgres.stop()

    columns = list(samples[0])
    print("  ".join(f"{column:>14}" for column in columns))
    for row in samples:
        print("  ".join(f"{row[column]!s:>14}" for column in columns))
    loaded = samples[1:]  # after the baseline
    answered = len(totals.answered)
    chain = ((verify.stdout + verify.stderr).strip().splitlines() or ["?"])[0]
    summary = {
        "backend": args.backend,
        "minutes": args.minutes,
        "target_decisions_per_s": args.rate,
        "batch_fields": args.batch_fields,
        "requests": totals.requests,
        "answered": answered,
        "audit_rows": rows,
        "answered_missing_from_audit": missing,
        "errors": totals.errors,
        "statuses": totals.statuses,
        "chain": chain,
        "chain_intact": verify.returncode == 0,
        "rss_mib_first_last": [loaded[0]["rss_mib"], loaded[-1]["rss_mib"]],
        "fds_first_last": [loaded[0]["fds"], loaded[-1]["fds"]],
        "samples": samples,
    }
    ok = rows == answered and missing == 0 and verify.returncode == 0
    print(
        f"answered {answered}, audit rows {rows}, missing {missing}, errors {totals.errors}, "
        f"chain: {chain}: {'OK' if ok else 'FAILED'}",
        file=sys.stderr,
    )
    if ok:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(log_path.read_text()[-4000:], file=sys.stderr)
        print(f"kept for a look: {folder}", file=sys.stderr)
    print(json.dumps({"soak": summary}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
