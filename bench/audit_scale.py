"""Audit trail at scale: build N chained audit rows, then time a person query and a full verify.

    python -m bench.audit_scale                 # 10 million rows, SQLite in a temp folder
    python -m bench.audit_scale --rows 20000    # a smoke run
    python -m bench.audit_scale --database-url postgresql+psycopg://...

Rows are written the way the audit writer writes them (chain_rows + one insert
per batch, the head moved in the same transaction), so verify walks a real chain.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from app.audit.chain import GENESIS, ChainHead, chain_rows
from app.audit.integrity import verify_chain
from app.audit.queries import AuditFilter, search_decisions
from app.audit.signing import AuditSigner
from app.store.database import make_engine, upgrade_schema
from app.store.tables import AuditChainHead, AuditDecision

REQUESTERS = [f"agency.requester-{n}" for n in range(40)]
HOLDERS = [f"agency.holder-{n}" for n in range(40)]
FIELDS = [f"field.group-{g}.item-{i}" for g in range(10) for i in range(8)]
PURPOSES = ["safeguarding.children", "safeguarding.adults", "crime-prevention", "early-help"]
REASONS = ["agreement", "field-not-covered", "purpose-not-covered", "no-agreement"]
WRITE_BATCH = 20_000


def _rows(count: int, persons: int, start: datetime, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for _ in range(count):
        reason = rng.choice(REASONS)
        rows.append(
            {
                "decision_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "request_id": "bench",
                "decided_at": start + timedelta(seconds=rng.random() * 86_400 * 365),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--persons", type=int, default=0, help="default: rows / 50")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--queries", type=int, default=200, help="person queries to time")
    args = parser.parse_args()
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

    query_ms = []
    with Session(engine) as session:
        for _ in range(args.queries):
            person = f"P-{rng.randrange(persons):07d}"
            began = time.perf_counter()
            search_decisions(session, where=AuditFilter(person_id=person), limit=100, cursor=None)
            query_ms.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    with engine.connect() as connection:
        verification = verify_chain(connection, signer.keyring())
    verify_seconds = time.perf_counter() - began
    engine.dispose()
    assert verification.intact and verification.rows_checked == args.rows, verification

    query_ms.sort()
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
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
