"""`accord audit partitions`, and what `accord audit verify` adds for incremental
verification: recording a signed "verified up to row S" after a successful verify."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError

from app.audit.chain import Verification
from app.audit.integrity import record_verification
from app.audit.partitions import (
    DEFAULT_PARTITION,
    default_partition_rows,
    ensure_partitions,
    is_partitioned,
    list_partitions,
)
from app.audit.signing import configured_signer
from app.cli.common import database
from app.config import get_settings


def register_partitions(audit: Any) -> None:
    partitions = audit.add_parser(
        "partitions",
        help="list the audit table's monthly partitions (PostgreSQL); make missing ones ahead",
    )
    partitions.add_argument(
        "--create-ahead",
        type=int,
        metavar="N",
        help="first make the partitions of this month and the next N months that are missing",
    )
    partitions.set_defaults(run=_partitions)


def _partitions(args: argparse.Namespace) -> int:
    if args.create_ahead is not None and args.create_ahead < 0:
        print("error: --create-ahead takes a number of months, 0 or more", file=sys.stderr)
        return 2
    with database() as engine:
        with engine.connect() as connection:
            partitioned = is_partitioned(connection)
        if not partitioned:
            print(
                f"the audit table is not partitioned ({engine.dialect.name}): retention "
                "deletes rows behind signed checkpoints"
            )
            return 0
        if args.create_ahead is not None:
            created = ensure_partitions(engine, months_ahead=args.create_ahead)
            print(f"made {len(created)} partitions: {', '.join(created) or 'none missing'}")
        with engine.connect() as connection:
            partitions = list_partitions(connection)
            in_default = default_partition_rows(connection)
    for partition in partitions:
        estimate = "?" if partition.estimated_rows is None else f"~{partition.estimated_rows}"
        print(f"{partition.name}\t{partition.bound}\t{estimate} rows")
    if in_default:
        print(
            f"WARNING: {DEFAULT_PARTITION} holds {in_default} rows: their months had no "
            "partition when they were written. Make partitions ahead (--create-ahead) and "
            "check the replicas' logs; a purge deletes these rows one by one",
            file=sys.stderr,
        )
    return 0


def record_verified(args: argparse.Namespace, result: Verification) -> str:
    """After a successful verify: with the service's own signing key (not an auditor's
    --public-key), record the signed "verified up to row S", from which
    `verify --since-checkpoint` starts; what to add to the report."""
    if not result.intact or args.public_key:
        return ""
    settings = get_settings()
    signer = configured_signer(settings.audit_signing_key_file, unsigned=settings.audit_unsigned)
    if signer is None:
        return ""
    try:
        with database() as engine:
            recorded = record_verification(engine, result, signer=signer, actor=args.actor)
    except DBAPIError as exc:  # e.g. an auditor's read-only role: the verification stands
        why = str(getattr(exc, "orig", exc)).splitlines()[0]
        return f"; not recorded as verified ({why})"
    return "" if recorded is None else f"; recorded as verified up to row {recorded.last_seq}"
