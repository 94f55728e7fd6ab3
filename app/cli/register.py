"""`accord register`: import a person register from CSV or NDJSON (all or nothing), export it."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from app.cli.common import database
from app.config import get_settings
from app.errors import Conflict
from app.policy.files import load_vocabulary
from app.register.transfer import FORMATS, Format, ImportRefused, export_register, format_of
from app.register.transfer import import_register as import_file


def register(commands: Any) -> None:
    group = commands.add_parser("register", help="the person register").add_subparsers(
        dest="register_command", required=True
    )
    imports = group.add_parser("import", help="store a CSV or NDJSON register file, all or nothing")
    imports.add_argument("file", help="a .csv, .ndjson or .jsonl file")
    imports.add_argument("--format", choices=FORMATS, help="default: from the file's extension")
    imports.add_argument(
        "--replace", action="store_true", help="replace stored entries whose content differs"
    )
    imports.add_argument("--actor", default="cli", help="who is importing (recorded)")
    imports.set_defaults(run=_import)
    export = group.add_parser("export", help="write every live entry, by person then id")
    export.add_argument("file", nargs="?", help="default: standard output")
    export.add_argument(
        "--format", choices=FORMATS, help="default: from the file's extension, else csv"
    )
    export.set_defaults(run=_export)


def _import(args: argparse.Namespace) -> int:
    fmt: Format | None = args.format or format_of(args.file)
    if fmt is None:
        print(
            f"error: cannot tell the format of {args.file}: name it .csv, .ndjson or .jsonl, "
            "or give --format",
            file=sys.stderr,
        )
        return 2
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    try:
        with (
            Path(args.file).open("rb") as source,
            database() as engine,
            Session(engine) as session,
        ):
            result = import_file(
                session,
                source,
                fmt=fmt,
                vocabulary=vocabulary,
                actor=args.actor,
                replace=args.replace,
            )
            session.commit()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportRefused as exc:
        print(f"import refused: {exc.detail}", file=sys.stderr)
        for place, reason in exc.invalid_params():
            print(f"{place}: {reason}", file=sys.stderr)
        return 1
    except Conflict as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"imported {args.file} (sha256 {result.sha256}): {result.rows} rows, "
        f"{result.added} added, {result.replaced} replaced, {result.unchanged} unchanged"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    fmt: Format = args.format or (format_of(args.file) if args.file else None) or "csv"
    with ExitStack() as stack:
        out: IO[bytes] = (
            stack.enter_context(Path(args.file).open("wb")) if args.file else sys.stdout.buffer
        )
        engine = stack.enter_context(database())
        session = stack.enter_context(Session(engine))
        for piece in export_register(session, fmt):
            out.write(piece)
        out.flush()
    return 0
