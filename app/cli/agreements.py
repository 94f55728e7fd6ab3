"""`accord agreements`: validate agreement files, import them as new versions, print
the JSON Schema of their format for editors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.agreements.service import ImportRefused, import_agreements
from app.cli.common import database
from app.config import get_settings
from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.document import agreement_json_schema
from app.policy.files import agreement_documents, load_vocabulary


def register(commands: Any) -> None:
    agreements = commands.add_parser("agreements", help="agreement files").add_subparsers(
        dest="agreements_command", required=True
    )
    validate = agreements.add_parser("validate", help="check files against the vocabulary")
    validate.add_argument("path", help="a YAML file or a folder of them")
    validate.set_defaults(run=_validate)
    imports = agreements.add_parser("import", help="store changed files as new versions")
    imports.add_argument("path", help="a YAML file or a folder of them")
    imports.add_argument("--actor", default="cli", help="who is importing (recorded)")
    imports.set_defaults(run=_import)
    schema = agreements.add_parser(
        "schema", help="print the JSON Schema of an agreement file, for editors"
    )
    schema.set_defaults(run=_schema)


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(agreement_json_schema(), indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    failed = 0
    for source, document in agreement_documents(Path(args.path)):
        try:
            agreement = parse_agreement(document, vocabulary, source=source)
            print(f"ok {source}: {agreement.id} ({agreement.status})")
        except AgreementInvalid as exc:
            failed += 1
            print(f"invalid {exc}", file=sys.stderr)
    return 1 if failed else 0


def _import(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    try:
        with database() as engine, Session(engine) as session:
            results = import_agreements(
                session,
                agreement_documents(Path(args.path)),
                vocabulary=vocabulary,
                actor=args.actor,
            )
            session.commit()
    except ImportRefused as exc:
        print(f"import refused, nothing stored:\n{exc}", file=sys.stderr)
        return 1
    for result in results:
        state = "new version" if result.changed else "unchanged"
        print(f"{result.agreement_id} v{result.version}: {state}")
    return 0
