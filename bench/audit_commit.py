"""Audit durability cost: group commit against a commit per decision, in the same run.

    python -m bench.audit_commit                      # 5,000 decisions from 50 concurrent callers
    python -m bench.audit_commit --decisions 500      # a smoke run
    python -m bench.audit_commit --database-url postgresql+psycopg://...

Each mode writes through the real AuditWriter (hash chain, head lock, durable
commit) into a fresh database. The commit-per-decision mode is the same writer
with batches of one row. Where strace is installed, each mode runs under it and
the fsync/fdatasync calls per 1,000 decisions are counted; otherwise commits
are reported. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.audit.record import AuditRecord
from app.audit.signing import AuditSigner
from app.audit.writer import AuditWriter
from app.store.database import make_engine, upgrade_schema


def _record() -> AuditRecord:
    return AuditRecord(
        decision_id=str(uuid.uuid4()),
        request_id="bench",
        decided_at=datetime.now(UTC),
        client="bench",
        requester="la.bench",
        holder="police.bench",
        person_id="P-1",
        field="identity.name",
        purpose="safeguarding.children",
        decision="permit",
        reason="agreement",
        agreement_id="isa-bench",
        agreement_version=1,
        restriction_id=None,
        consent_id=None,
        break_glass=False,
        justification=None,
        user_ref="bench",
        case_ref=None,
        policy_revision=1,
        obligations=[],
        routes_offered=[],
    )


async def _drive(writer: AuditWriter, decisions: int, callers: int) -> None:
    remaining = iter(range(decisions))

    async def caller() -> None:
        for _ in remaining:
            await writer.write([_record().model_dump()])

    await asyncio.gather(*(caller() for _ in range(callers)))


def inner(mode: str, url: str, decisions: int, callers: int) -> None:
    """One mode in this process: prints seconds and commits as JSON."""
    engine = make_engine(url, write_lock_at_begin=True)
    writer = AuditWriter(
        engine,
        signer=AuditSigner(Ed25519PrivateKey.generate()),  # each head signed, as served
        max_batch_rows=1000 if mode == "group" else 1,
        timeout_seconds=60,
    )
    writer.start()
    started = time.perf_counter()
    asyncio.run(_drive(writer, decisions, callers))
    seconds = time.perf_counter() - started
    writer.stop()
    engine.dispose()
    print(json.dumps({"seconds": seconds, "commits": writer.commits}))


def _run_mode(mode: str, url: str, decisions: int, callers: int) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "bench.audit_commit",
        "--inner",
        mode,
        "--database-url",
        url,
        "--decisions",
        str(decisions),
        "--callers",
        str(callers),
    ]
    fsyncs = None
    if shutil.which("strace"):
        with tempfile.NamedTemporaryFile(suffix=".strace") as trace:
            out = subprocess.run(
                ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", trace.name, *command],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            summary = Path(trace.name).read_text()
        fsyncs = sum(
            int(columns[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
            for columns in (line.split() for line in summary.splitlines())
            if columns and columns[-1] in ("fsync", "fdatasync")
        )
    else:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return {
        "mode": mode,
        "decisions": decisions,
        "decisions_per_s": round(decisions / figures["seconds"]),
        "commits": figures["commits"],
        "commits_per_1000": round(figures["commits"] * 1000 / decisions, 1),
        "fsyncs_per_1000": None if fsyncs is None else round(fsyncs * 1000 / decisions, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--database-url", help="default: a fresh SQLite file per mode")
    parser.add_argument("--inner", choices=["group", "single"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.database_url, args.decisions, args.callers)
        return
    results = []
    for mode in ("group", "single"):
        url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'audit.db'}"
        upgrade_schema(url)
        results.append(_run_mode(mode, url, args.decisions, args.callers))
    speedup = results[0]["decisions_per_s"] / results[1]["decisions_per_s"]  # type: ignore[operator]
    columns = list(results[0])
    print("  ".join(f"{c:>16}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]!s:>16}" for c in columns))
    print(f"group commit: {speedup:.1f}x the decisions per second of a commit per decision")
    print(json.dumps({"audit": results, "group_speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
