"""Policy test files: requests and the decisions they must get, run on the engine alone.

The format is the shared scenario's `cases.yaml`: an optional `register`
(restrictions and consents), an optional `now`, `cases` (one field each,
`expect` of decision, reason, agreement, restriction, break_glass or an HTTP
`status` for a refused request) and `batches` (`expect.permitted`).
`accord policy test` runs them like `opa test`: a readable diff per failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from app.decision.engine import Decision, decide
from app.decision.facts import given_facts
from app.decision.schemas import BatchDecisionRequest, DecisionRequest
from app.decision.validate import validated_questions
from app.errors import InvalidRequest
from app.policy.agreements import Agreement
from app.policy.compiler import compile_policy
from app.policy.register import (
    NO_ENTRIES,
    Consent,
    PersonRegister,
    Restriction,
    Scope,
    window_of,
)
from app.policy.vocabulary import Vocabulary
from app.runtime.snapshot import PolicySnapshot


@dataclass
class CaseResult:
    name: str
    mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return _moment(datetime.fromisoformat(str(value)))


def _scope(entry: Mapping[str, Any]) -> Scope:
    def names(key: str) -> tuple[str, ...] | None:
        return tuple(entry[key]) if key in entry else None

    return Scope(names("recipients"), names("fields"), names("purposes"))


def register_of(document: Mapping[str, Any], recorded_at: datetime) -> dict[str, PersonRegister]:
    """A test file's register, as if recorded at `recorded_at`."""
    restrictions: dict[str, list[Restriction]] = defaultdict(list)
    consents: dict[str, list[Consent]] = defaultdict(list)
    for entry in document.get("restrictions", []):
        restrictions[entry["person"]].append(
            Restriction(
                entry["id"],
                entry["person"],
                entry["kind"],
                _scope(entry),
                window_of(recorded_at, _moment(entry.get("until"))),
            )
        )
    for entry in document.get("consents", []):
        consents[entry["person"]].append(
            Consent(
                entry["id"],
                entry["person"],
                _scope(entry),
                window_of(recorded_at, _moment(entry.get("until"))),
            )
        )
    return {
        person: PersonRegister(tuple(restrictions[person]), tuple(consents[person]))
        for person in sorted(set(restrictions) | set(consents))
    }


@dataclass(frozen=True)
class _TestRun:
    """One test file's policy (with its enforcer) and register."""

    snapshot: PolicySnapshot
    register: Mapping[str, PersonRegister]

    def decide(
        self, request: DecisionRequest | BatchDecisionRequest, now: datetime
    ) -> list[Decision]:
        policy = self.snapshot.policy
        questions = validated_questions(request, policy.vocabulary, max_fields=10_000)
        entries = self.register.get(request.subject.id, NO_ENTRIES)
        facts = given_facts(request.subject, now.date(), entries)
        return decide(policy, questions, facts, now, enforcer=self.snapshot.enforcer)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value.isoformat() if isinstance(value, date) else value


def _check_case(run: _TestRun, case: Mapping[str, Any], now: datetime) -> CaseResult:
    result = CaseResult(str(case.get("name", "unnamed case")))
    expect = case.get("expect", {})
    body = _jsonable({"context": {}, **case["request"]})
    try:
        decision = run.decide(DecisionRequest.model_validate(body), now)[0]
    except (ValidationError, InvalidRequest) as exc:
        if expect.get("status") != 422:
            result.mismatches.append(f"request refused (422): {exc}".splitlines()[0])
        return result
    if "status" in expect:
        result.mismatches.append(f"status: expected {expect['status']}, got a decision")
        return result
    actual = {
        "decision": decision.outcome,
        "reason": decision.reason,
        "agreement": decision.agreement_id,
        "restriction": decision.restriction_id,
        "break_glass": decision.break_glass,
        "overridden": decision.overridden_objection_id,
    }
    for key, wanted in expect.items():
        if key in actual and actual[key] != wanted:
            result.mismatches.append(f"{key}: expected {wanted}, got {actual[key]}")
    return result


def _check_batch(run: _TestRun, batch: Mapping[str, Any], now: datetime) -> CaseResult:
    result = CaseResult(str(batch.get("name", "unnamed batch")))
    body = _jsonable({"context": {}, **batch["request"]})
    try:
        decisions = run.decide(BatchDecisionRequest.model_validate(body), now)
    except (ValidationError, InvalidRequest) as exc:
        result.mismatches.append(f"request refused (422): {exc}".splitlines()[0])
        return result
    permitted = {d.field for d in decisions if d.permit}
    wanted = set(batch.get("expect", {}).get("permitted", []))
    if missing := sorted(wanted - permitted):
        result.mismatches.append(f"permitted: expected but denied: {', '.join(missing)}")
    if extra := sorted(permitted - wanted):
        result.mismatches.append(f"permitted: not expected but permitted: {', '.join(extra)}")
    return result


def run_test_file(
    document: Mapping[str, Any],
    *,
    vocabulary: Vocabulary,
    agreements: Iterable[Agreement],
    model_text: str,
    now: datetime,
) -> list[CaseResult]:
    """Every case and batch of one test file, against the given agreements."""
    at = _moment(document.get("now")) or now
    policy = compile_policy(
        revision=0, vocabulary=vocabulary, agreements=agreements, model_text=model_text
    )
    run = _TestRun(
        snapshot=PolicySnapshot.of(policy, memoise=False),
        register=register_of(document.get("register") or {}, recorded_at=at),
    )
    results = [_check_case(run, case, at) for case in document.get("cases", [])]
    results += [_check_batch(run, batch, at) for batch in document.get("batches", [])]
    return results
