"""`accord decide`: evaluate one decision request offline, from agreement files, and print
the answer; with `--explain`, also the Casbin lines the evaluator saw and the one that
decided (like `opa eval --explain`). No database: nothing is recorded."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from app.config import PROJECT_DIR, get_settings
from app.decision.engine import Decision, LeafTrace, decide
from app.decision.facts import given_facts
from app.decision.router import batch_body, decision_body
from app.decision.schemas import BatchDecisionRequest, DecisionRequest
from app.decision.service import Answer, RecordedDecision
from app.decision.validate import AnyDecisionRequest, validated_questions
from app.errors import InvalidRequest
from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.compiler import compile_policy
from app.policy.files import agreement_documents, load_vocabulary
from app.policy.lines import POLICY_TOKENS, PolicyLine
from app.policy.register import (
    Consent,
    PersonRegister,
    Restriction,
    RestrictionKind,
    Scope,
    window_of,
)
from app.policy.vocabulary import Vocabulary
from app.register.service import NewEntry
from app.register.transfer import ImportRefused, format_of, read_entries
from app.runtime.enforcer import CandidateEnforcer


class _Refused(Exception):
    """An input that cannot be decided on: exit 2 with this message."""


def register(commands: Any) -> None:
    decide_command = commands.add_parser(
        "decide", help="evaluate one decision request offline, from agreement files"
    )
    decide_command.add_argument(
        "request", help="a JSON file: the body of POST /v1/decisions or /v1/decisions/batch"
    )
    decide_command.add_argument(
        "--agreements",
        default=str(PROJECT_DIR / "policies" / "agreements"),
        help="agreement file or folder (default: policies/agreements)",
    )
    decide_command.add_argument(
        "--register",
        help="a register file as `accord register import` reads it (.csv, .ndjson or .jsonl): "
        "the person's entries, as if recorded at --at",
    )
    decide_command.add_argument(
        "--at", type=_rfc3339, help="decide at this RFC 3339 time (default: now)"
    )
    decide_command.add_argument(
        "--explain",
        action="store_true",
        help="also print, for each leaf field, the lines the evaluator saw and the deciding one",
    )
    decide_command.set_defaults(run=_decide)


def _rfc3339(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not an RFC 3339 time with its offset")
    return moment.astimezone(UTC)


def _decide(args: argparse.Namespace) -> int:
    settings = get_settings()
    at: datetime = args.at or datetime.now(UTC)
    vocabulary = load_vocabulary(settings.vocabulary_file)
    try:
        request = _request(Path(args.request))
        agreements = [
            parse_agreement(document, vocabulary, source=source)
            for source, document in agreement_documents(Path(args.agreements))
        ]
        entries = _register(Path(args.register), vocabulary) if args.register else []
        questions = validated_questions(request, vocabulary, settings.max_batch_fields)
    except _Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AgreementInvalid as exc:
        print(f"invalid {exc}", file=sys.stderr)
        return 2
    except InvalidRequest as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return 2
    policy = compile_policy(
        revision=0,
        vocabulary=vocabulary,
        agreements=agreements,
        model_text=settings.model_file.read_text(encoding="utf-8"),
    )
    facts = given_facts(
        request.subject, at.date(), _person_register(entries, request.subject.id, at)
    )
    traces: list[list[LeafTrace]] = []
    decisions = decide(
        policy,
        questions,
        facts,
        at,
        enforcer=CandidateEnforcer(policy.model_text),
        trace=traces if args.explain else None,
    )
    answer = Answer([RecordedDecision(None, d) for d in decisions], policy.revision, at)
    body = (
        decision_body(answer.decisions[0], answer)
        if isinstance(request, DecisionRequest)
        else batch_body(answer)
    )
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())
    if args.explain:
        for decision, leaves in zip(decisions, traces, strict=True):
            print()
            print(_explained(decision, leaves))
    return 0


def _request(path: Path) -> AnyDecisionRequest:
    """The request file as a single or (with `fields`) batch decision request."""
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"invalid request: {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _Refused(f"invalid request: {path} is not a JSON object")
    model = BatchDecisionRequest if "fields" in document else DecisionRequest
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise _Refused(f"invalid request: {problems}") from None


def _location(loc: tuple[int | str, ...]) -> str:
    """`subject.attributes.age`, `fields[2]`: pydantic's location without union-branch tags."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not any(mark in part for mark in "[('"):
            text += f".{part}" if text else part
    return text or "body"


def _register(path: Path, vocabulary: Vocabulary) -> list[NewEntry]:
    fmt = format_of(path.name)
    if fmt is None:
        raise _Refused(f"error: cannot tell the format of {path}: name it .csv, .ndjson or .jsonl")
    try:
        with path.open("rb") as source:
            return read_entries(source, fmt, vocabulary)
    except ImportRefused as exc:
        problems = "; ".join(f"{place}: {reason}" for place, reason in exc.invalid_params())
        raise _Refused(f"invalid register file {path}: {problems}") from None


def _person_register(entries: list[NewEntry], person_id: str, at: datetime) -> PersonRegister:
    """The person's entries in the file, as if recorded at `at`."""
    restrictions: list[Restriction] = []
    consents: list[Consent] = []
    for entry in entries:
        if entry.person_id != person_id:
            continue
        assert entry.id is not None  # every row of a register file names its id
        scope = Scope(
            *(
                None if names is None else tuple(names)
                for names in (entry.recipients, entry.fields, entry.purposes)
            )
        )
        window = window_of(at, entry.until)
        if entry.kind == "consent":
            consents.append(Consent(entry.id, person_id, scope, window))
        else:
            kind: RestrictionKind = "sealed" if entry.kind == "sealed" else "objection"
            restrictions.append(Restriction(entry.id, person_id, kind, scope, window))
    return PersonRegister(tuple(restrictions), tuple(consents))


def _explained(decision: Decision, leaves: list[LeafTrace]) -> str:
    """A decision's trace as text: per leaf, its candidate lines (the deciding one marked
    `>`) and the line that decided, or the default deny."""
    out = [f"{decision.field}: {decision.outcome} ({decision.reason})"]
    for leaf in leaves:
        out.append(f"  {leaf.field}: {len(leaf.lines)} candidate line(s)")
        if leaf.lines:
            out += _table(leaf.lines, leaf.deciding)
        if leaf.deciding is None:
            out.append("    no line matched: default deny")
        else:
            out.append(
                f"    decided by {leaf.deciding.source} "
                f"(stage {leaf.deciding.stage}, {leaf.deciding.eft})"
            )
    return "\n".join(out)


def _table(lines: tuple[PolicyLine, ...], deciding: PolicyLine | None) -> list[str]:
    rows = [list(POLICY_TOKENS), *([value or "-" for value in line] for line in lines)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(POLICY_TOKENS))]
    decided = lines.index(deciding) if deciding is not None else -1
    marks = [" ", *(">" if index == decided else " " for index in range(len(lines)))]
    return [
        f"    {mark} "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for mark, row in zip(marks, rows, strict=True)
    ]
