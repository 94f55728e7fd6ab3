"""`accord audit`: verify the hash chain, purge past retention, print the chain head."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.audit.integrity import head_decision_id, purge_before, read_head, verify_chain
from app.cli.common import database
from app.config import get_settings
from app.errors import InvalidRequest


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser("verify", help="check the hash chain; exit 1 at a broken link").set_defaults(
        run=_verify
    )
    purge = audit.add_parser("purge", help="remove rows older than the retention period")
    purge.add_argument(
        "--before",
        type=date.fromisoformat,
        help="YYYY-MM-DD (default: the retention period's start)",
    )
    purge.add_argument("--actor", default="cli", help="who is purging (recorded)")
    purge.set_defaults(run=_purge)
    audit.add_parser(
        "head", help="print the chain head (seq, hash) as JSON, to keep outside the database"
    ).set_defaults(run=_head)


def _verify(_: argparse.Namespace) -> int:
    with database() as engine, engine.connect() as connection:
        result = verify_chain(connection)
    if result.broken is not None:
        link = result.broken
        print(
            f"BROKEN at row {link.seq} (decision {link.decision_id or '-'}): {link.problem}; "
            f"{result.rows_checked} rows verified before it",
            file=sys.stderr,
        )
        return 1
    print(f"intact: {result.rows_checked} rows verified, chain head at row {result.last_seq}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    settings = get_settings()
    oldest_kept = datetime.now(UTC) - timedelta(days=settings.audit_retention_days)
    before = (
        oldest_kept if args.before is None else datetime.combine(args.before, time(), tzinfo=UTC)
    )
    if before > datetime.now(UTC):
        print(f"error: {before.date()} is in the future; nothing purged", file=sys.stderr)
        return 1
    if before > oldest_kept:
        print(
            f"error: {before.date()} is inside the retention period "
            f"(ACCORD_AUDIT_RETENTION_DAYS={settings.audit_retention_days}); nothing purged",
            file=sys.stderr,
        )
        return 1
    try:
        with database() as engine:  # it verifies without the write lock
            purge = purge_before(engine, before=before, actor=args.actor)
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if purge is None:
        print(f"nothing decided before {before.date()} to purge")
    else:
        print(
            f"purged {purge.rows_removed} rows up to row {purge.last_seq}; "
            "checkpoint recorded, the rest of the chain still verifies"
        )
    return 0


def _head(_: argparse.Namespace) -> int:
    """Print the chain head as one JSON line, to be copied outside the database."""
    with database() as engine, engine.connect() as connection:
        head = read_head(connection)
        decision_id = head_decision_id(connection, head)
    read_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"seq": head.seq, "hash": head.hash, "decision_id": decision_id, "read_at": read_at}
    print(json.dumps(record))
    return 0
