"""`accord clients`: create an API client (its key shown once) or revoke one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.cli.common import database, listed
from app.clients.service import create_client, revoke_client
from app.config import get_settings
from app.errors import Conflict, InvalidRequest, NotFound
from app.policy.files import load_vocabulary
from app.runtime.callers import SCOPES


def register(commands: Any) -> None:
    clients = commands.add_parser("clients", help="API clients").add_subparsers(
        dest="clients_command", required=True
    )
    create = clients.add_parser("create", help="create a client and print its key once")
    create.add_argument("--id", required=True, help="the client's id, e.g. police-rms")
    create.add_argument("--name", help="a readable name")
    create.add_argument("--scopes", required=True, help="comma-separated: " + ", ".join(SCOPES))
    create.add_argument("--agencies", required=True, help="comma-separated agency ids")
    create.add_argument("--key-file", help="write the key to this file (mode 600), not stdout")
    create.add_argument("--actor", default="cli", help="who is creating it (recorded)")
    create.set_defaults(run=_create)
    revoke = clients.add_parser("revoke", help="revoke a client's key")
    revoke.add_argument("id")
    revoke.add_argument("--actor", default="cli", help="who is revoking it (recorded)")
    revoke.set_defaults(run=_revoke)


def _create(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    try:
        with database() as engine, Session(engine) as session:
            row, key = create_client(
                session,
                client_id=args.id,
                name=args.name or args.id,
                scopes=listed(args.scopes),
                agencies=listed(args.agencies),
                vocabulary=vocabulary,
                actor=args.actor,
            )
            summary = f"client {row.id}: scopes {', '.join(row.scopes)}; agencies " + ", ".join(
                row.agencies
            )
            session.commit()
    except (InvalidRequest, Conflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    if args.key_file:
        path = Path(args.key_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(key + "\n", encoding="utf-8")
        print(f"key written to {path} (it is not stored anywhere else)")
    else:
        print(f"key (shown once, store it now): {key}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        with database() as engine, Session(engine) as session:
            revoke_client(session, client_id=args.id, actor=args.actor)
            session.commit()
    except (NotFound, Conflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"client {args.id} revoked")
    return 0
