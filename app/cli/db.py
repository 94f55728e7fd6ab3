"""`accord db`: the database schema, through Alembic."""

from __future__ import annotations

import argparse
from typing import Any

from app.config import get_settings
from app.store.database import upgrade_schema


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="apply migrations up to the latest").set_defaults(run=_upgrade)


def _upgrade(_: argparse.Namespace) -> int:
    upgrade_schema(get_settings().database_url)
    print("database at the latest schema")
    return 0
