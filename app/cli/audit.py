"""`accord audit`: verify the hash chain and its signatures, purge past retention, print the
signed chain head, follow the trail."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import sleep
from typing import Any

from app.audit import queries, stream
from app.audit.chain import ChainHead
from app.audit.integrity import purge_before, verify_chain
from app.audit.router import MAX_SEQ, ChainHeadOut, ndjson_line
from app.audit.signing import KeyRing, SigningKeyError, configured_signer, load_public_key
from app.cli.audit_partitions import record_verified, register_partitions
from app.cli.common import database
from app.config import get_settings
from app.errors import InvalidRequest


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="check the hash chain and its signatures; exit 1 at a broken link"
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="a trusted public key (PEM; repeat for rotated keys); "
        "default: the public half of ACCORD_AUDIT_SIGNING_KEY_FILE",
    )
    verify.add_argument(
        "--head",
        type=Path,
        help="signed heads saved earlier (`accord audit head --signed`, one JSON a line): "
        "prove that nothing up to each of them changed",
    )
    verify.add_argument(
        "--since-checkpoint",
        action="store_true",
        help="verify only the rows after the last signed verification record (each successful "
        "verify with the signing key records one)",
    )
    verify.add_argument("--actor", default="cli", help="who is verifying (recorded)")
    verify.set_defaults(run=_verify)
    purge = audit.add_parser("purge", help="remove rows older than the retention period")
    purge.add_argument(
        "--before",
        type=date.fromisoformat,
        help="YYYY-MM-DD (default: the retention period's start)",
    )
    purge.add_argument("--actor", default="cli", help="who is purging (recorded)")
    purge.add_argument(
        "--exact-rows",
        action="store_true",
        help="PostgreSQL, partitioned: delete every row before the date in batches, rather "
        "than drop the whole months before it (the default)",
    )
    purge.set_defaults(run=_purge)
    head = audit.add_parser(
        "head", help="print the chain head (seq, hash) as JSON, to keep outside the database"
    )
    head.add_argument(
        "--signed", action="store_true", help="with the head's signature, for `verify --head`"
    )
    head.set_defaults(run=_head)
    tail = audit.add_parser(
        "tail",
        help="print the rows after a seq as NDJSON (as GET /v1/audit/stream sends them), "
        "then each new row as it is committed, until interrupted",
    )
    tail.add_argument(
        "--after",
        type=_seq,
        default=0,
        help="start after this seq (default 0: from the first row); to resume, the last "
        "seq printed",
    )
    tail.set_defaults(run=_tail)
    register_partitions(audit)


def _seq(text: str) -> int:
    """A seq: a whole number from 0 to MAX_SEQ, as the stream's `after`."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEQ:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a seq (a whole number from 0 to {MAX_SEQ})"
        )
    return int(text)


def _keyring(public_keys: list[Path] | None) -> KeyRing | None:
    """The keys to check signatures with; None only for an unsigned deployment."""
    if public_keys:
        return KeyRing(load_public_key(path) for path in public_keys)
    settings = get_settings()
    signer = configured_signer(settings.audit_signing_key_file, unsigned=settings.audit_unsigned)
    return None if signer is None else signer.keyring()


def _saved_heads(path: Path) -> list[ChainHead]:
    heads = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            saved = json.loads(line)
            heads.append(ChainHead(int(saved["seq"]), str(saved["hash"]), saved.get("signature")))
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningKeyError(f"{path}:{number} is not a saved head ({exc})") from exc
    return heads


def _verify(args: argparse.Namespace) -> int:
    keys = _keyring(args.public_key)
    if keys is None and args.head is not None:
        print("error: --head needs a public key to check the saved heads", file=sys.stderr)
        return 2
    saved = [] if args.head is None else _saved_heads(args.head)
    with database() as engine, engine.connect() as connection:
        result = verify_chain(connection, keys, saved, since_verified=args.since_checkpoint)
    if result.broken is not None:
        link = result.broken
        print(
            f"BROKEN at row {link.seq} (decision {link.decision_id or '-'}): {link.problem}; "
            f"{result.rows_checked} rows verified before it",
            file=sys.stderr,
        )
        return 1
    signatures = (
        f"head and checkpoints signed by key {', '.join(result.signed_by)}"
        if result.signed_by
        else "signatures NOT checked (ACCORD_AUDIT_UNSIGNED: development only)"
    )
    witnessed = f"; {len(saved)} saved heads on the chain" if saved else ""
    since = f" after row {result.start_seq}" if args.since_checkpoint else ""
    print(
        f"intact: {result.rows_checked} rows verified{since}, chain head at row "
        f"{result.last_seq}; {signatures}{witnessed}{record_verified(args, result)}"
    )
    return 0


def _purge(args: argparse.Namespace) -> int:
    settings = get_settings()
    signer = configured_signer(settings.audit_signing_key_file, unsigned=settings.audit_unsigned)
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
            purge = purge_before(
                engine,
                before=before,
                actor=args.actor,
                signer=signer,
                whole_months=not args.exact_rows,
            )
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if purge is None:
        print(f"nothing decided before {before.date()} to purge")
    else:
        print(
            f"purged {purge.rows_removed} rows up to row {purge.last_seq}; "
            "signed checkpoints recorded, the rest of the chain still verifies"
        )
    return 0


def _head(args: argparse.Namespace) -> int:
    """Print the chain head as one JSON line, to be copied outside the database."""
    with database() as engine, engine.connect() as connection:
        head = ChainHeadOut.read(connection, datetime.now(UTC))
    print(head.model_dump_json(exclude=None if args.signed else {"signature"}))
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Print each row after --after as one NDJSON line, in seq order, and keep following
    the trail (the same reads as the stream endpoint) until Ctrl-C, which ends it quietly."""
    after: int = args.after
    out = sys.stdout.buffer
    try:
        with database() as engine:
            while True:
                rows = queries.decisions_after(engine, after=after)
                for row in rows:
                    out.write(ndjson_line(row))
                    after = row.seq
                out.flush()
                if len(rows) < queries.FOLLOW_BATCH:
                    sleep(stream.POLL_SECONDS)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # its reader left (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
