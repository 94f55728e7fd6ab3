"""`accord policy`: export the compiled policy as Casbin files; run policy test files."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.cli.common import database
from app.config import PROJECT_DIR, get_settings
from app.decision.policy_tests import run_test_file
from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.files import agreement_documents, load_vocabulary, read_yaml
from app.runtime.live_policy import load_policy


def register(commands: Any) -> None:
    policy = commands.add_parser("policy", help="compiled policy").add_subparsers(
        dest="policy_command", required=True
    )
    export = policy.add_parser(
        "export", help="write Casbin model.conf and policy.csv, and obligations.csv"
    )
    export.add_argument("--out", default="policy-export", help="folder to write into")
    export.set_defaults(run=_export)
    test = policy.add_parser("test", help="run policy test files against agreement files")
    test.add_argument("path", help="a test file or a folder of them (policies/tests)")
    test.add_argument(
        "--agreements",
        default=str(PROJECT_DIR / "policies" / "agreements"),
        help="agreement file or folder to test (default: policies/agreements)",
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(run=_test)


def _export(args: argparse.Namespace) -> int:
    settings = get_settings()
    with database() as engine:
        policy = load_policy(
            engine, vocabulary_file=settings.vocabulary_file, model_file=settings.model_file
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.conf").write_text(policy.model_text, encoding="utf-8")
    lines = policy.all_lines()
    with (out / "policy.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for line in lines:
            writer.writerow(("p", *line))
    # A permit's obligations, by the `source` token of the line that permitted it.
    obligations = sorted(
        (source.key, obligation.field, obligation.mask)
        for source in policy.sources.values()
        for obligation in source.obligations
    )
    with (out / "obligations.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("source", "field", "mask"))
        writer.writerows(obligations)
    print(
        f"revision {policy.revision}: {len(lines)} lines and {len(obligations)} obligations "
        f"written to {out}"
    )
    return 0


def _test(args: argparse.Namespace) -> int:
    settings = get_settings()
    vocabulary = load_vocabulary(settings.vocabulary_file)
    try:
        agreements = [
            parse_agreement(document, vocabulary, source=source)
            for source, document in agreement_documents(Path(args.agreements))
        ]
    except AgreementInvalid as exc:
        print(f"invalid {exc}", file=sys.stderr)
        return 2
    path = Path(args.path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    passed = failed = 0
    for file in files:
        results = run_test_file(
            read_yaml(file),
            vocabulary=vocabulary,
            agreements=agreements,
            model_text=settings.model_file.read_text(encoding="utf-8"),
            now=datetime.now(UTC),
        )
        for result in results:
            if result.passed:
                passed += 1
                if args.verbose:
                    print(f"PASS {file.name}: {result.name}")
                continue
            failed += 1
            print(f"FAIL {file.name}: {result.name}")
            for mismatch in result.mismatches:
                print(f"    {mismatch}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0
