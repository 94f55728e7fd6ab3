"""`accord agreements`: validate agreement files, import them as new versions, print
the JSON Schema of their format for editors."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from sqlalchemy.orm import Session

from app.agreements.service import (
    FORCE_IMPORTED,
    IMPORTED,
    ImportRefused,
    current_versions,
    import_agreements,
)
from app.cli.common import database
from app.config import get_settings
from app.decision.impact import Action, assess, proposed
from app.decision.router import impact_out
from app.errors import Conflict, NotFound, Unprocessable
from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.compiler import CompiledPolicy, with_agreement
from app.policy.document import agreement_json_schema
from app.policy.files import load_vocabulary, read_agreement_files
from app.runtime.live_policy import load_policy
from app.runtime.snapshot import PolicySnapshot


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
    imports.add_argument(
        "--force",
        action="store_true",
        help="overwrite agreements changed over the API since their last import (recorded)",
    )
    imports.add_argument(
        "--if-empty",
        action="store_true",
        help="import only into a database that holds no agreement (seeding it)",
    )
    imports.set_defaults(run=_import)
    schema = agreements.add_parser(
        "schema", help="print the JSON Schema of an agreement file, for editors"
    )
    schema.set_defaults(run=_schema)
    impact = agreements.add_parser(
        "impact", help="what a change to an agreement would grant and remove (changes nothing)"
    )
    impact.add_argument(
        "target", help="a stored agreement's id, or an agreement file (its next version)"
    )
    impact.add_argument(
        "--action",
        choices=get_args(Action),
        required=True,
        help="activate, suspend or revoke the stored agreement; with a file: version (its "
        "status kept) or activate (in force)",
    )
    impact.add_argument("--json", action="store_true", help="the API's JSON, not a table")
    impact.set_defaults(run=_impact)


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(agreement_json_schema(), indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Every bad file of one run, unreadable or invalid, in file order."""
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    documents, unreadable = read_agreement_files(Path(args.path))
    problems = [str(exc) for exc in unreadable]
    for source, document in documents:
        try:
            agreement = parse_agreement(document, vocabulary, source=source)
            print(f"ok {source}: {agreement.id} ({agreement.status})")
        except AgreementInvalid as exc:
            problems.append(str(exc))
    for problem in sorted(problems):
        print(f"invalid {problem}", file=sys.stderr)
    return 1 if problems else 0


STATES = {
    None: "unchanged, nothing stored",
    IMPORTED: "new version",
    FORCE_IMPORTED: "new version, forced over changes made over the API",
}


def _import(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    with database() as engine, Session(engine) as session:
        if args.if_empty and current_versions(session):
            print("the database holds agreements already: nothing imported (--if-empty)")
            return 0
        documents, unreadable = read_agreement_files(Path(args.path))
        try:
            results = import_agreements(
                session,
                documents,
                vocabulary=vocabulary,
                actor=args.actor,
                force=args.force,
                unreadable=unreadable,
            )
        except ImportRefused as exc:
            print(f"import refused, nothing stored:\n{exc}", file=sys.stderr)
            return 1
        session.commit()
    for result in results:
        print(f"{result.agreement_id} v{result.version}: {STATES[result.change]}")
    return 0


def _impact(args: argparse.Namespace) -> int:
    settings = get_settings()
    with database() as engine:
        policy = load_policy(
            engine, vocabulary_file=settings.vocabulary_file, model_file=settings.model_file
        )
    try:
        return _print_impact(policy, Path(args.target), args.action, as_json=args.json)
    except (Unprocessable, NotFound, Conflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _print_impact(policy: CompiledPolicy, path: Path, action: Action, *, as_json: bool) -> int:
    if path.is_file():
        documents, unreadable = read_agreement_files(path)
        if unreadable:
            print(f"invalid {unreadable[0]}", file=sys.stderr)
            return 1
        [(_, document)] = documents
        if action not in ("version", "activate"):
            print("error: with a file, --action is version or activate", file=sys.stderr)
            return 2
        status = {"status": "active"} if action == "activate" else {}
        agreement_id = str(document.get("id"))
        changed = proposed(policy, agreement_id, "version", {**document, **status})
    else:
        agreement_id = str(path)
        changed = proposed(policy, agreement_id, action, None)
    impact = assess(
        policy,
        with_agreement(policy, changed),
        agreement_id=agreement_id,
        action=action,
        now=datetime.now(UTC),
        enforcer=PolicySnapshot.of(policy, memoise=False).enforcer,
    )
    report = impact_out(impact, policy.revision)
    if as_json:
        print(report.model_dump_json(indent=2))
        return 0
    print(
        f"{agreement_id}: {action}, on policy revision {policy.revision}; "
        f"agency pairs compared: {len(impact.pairs)}, over every field and purpose it reaches"
    )
    for title, groups in (("GRANTED", report.granted), ("REMOVED", report.removed)):
        flows = [(group, flow) for group in groups for flow in group.flows]
        print(f"\n{title} ({len(flows)})")
        for group, flow in flows:
            bounds = (
                f" ages {flow.min_age or 0}-{flow.max_age if flow.max_age is not None else ''}"
                if flow.condition == "within-age-bounds"
                else ""
            )
            print(
                f"{'!' if flow.flagged else ' '} {group.holder} -> {group.requester} "
                f"[{group.purpose}] {flow.field}: {flow.condition}{bounds}; {flow.data_class}, "
                f"{flow.lawful_basis or 'NO LAWFUL BASIS for this class'} "
                f"({flow.agreement_id} v{flow.agreement_version})"
            )
    print("\n! special-category or criminal-offence data")
    return 0
