"""The shared scenario as pure objects, for tests of the compiler and engine alone."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from app.policy.agreements import Agreement, parse_agreement
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.files import agreement_documents, load_vocabulary
from app.policy.register import Consent, PersonRegister, Restriction, Scope
from app.policy.vocabulary import Vocabulary
from tests.conftest import REPO, SCENARIO, load_yaml

MODEL_TEXT = (REPO / "policies" / "model.conf").read_text()


def scenario_vocabulary() -> Vocabulary:
    return load_vocabulary(SCENARIO / "vocabulary.yaml")


def scenario_agreements(vocabulary: Vocabulary) -> list[Agreement]:
    return [
        parse_agreement(document, vocabulary, source=source)
        for source, document in agreement_documents(SCENARIO / "agreements")
    ]


def _moment(value: date | None) -> datetime | None:
    return None if value is None else datetime(value.year, value.month, value.day, tzinfo=UTC)


def _scope(entry: dict[str, Any]) -> Scope:
    return Scope(
        recipients=tuple(entry["recipients"]) if "recipients" in entry else None,
        fields=tuple(entry["fields"]) if "fields" in entry else None,
        purposes=tuple(entry["purposes"]) if "purposes" in entry else None,
    )


def register_from(
    entries: dict[str, list[dict[str, Any]]], recorded_at: datetime
) -> dict[str, PersonRegister]:
    restrictions: dict[str, list[Restriction]] = defaultdict(list)
    consents: dict[str, list[Consent]] = defaultdict(list)
    for entry in entries.get("restrictions", []):
        restrictions[entry["person"]].append(
            Restriction(
                entry["id"],
                entry["person"],
                entry["kind"],
                _scope(entry),
                recorded_at,
                _moment(entry.get("until")),
            )
        )
    for entry in entries.get("consents", []):
        consents[entry["person"]].append(
            Consent(
                entry["id"],
                entry["person"],
                _scope(entry),
                recorded_at,
                _moment(entry.get("until")),
            )
        )
    return {
        person: PersonRegister(tuple(restrictions[person]), tuple(consents[person]))
        for person in set(restrictions) | set(consents)
    }


def scenario_policy(recorded_at: datetime, revision: int = 1) -> CompiledPolicy:
    vocabulary = scenario_vocabulary()
    return compile_policy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=scenario_agreements(vocabulary),
        register=register_from(load_yaml(SCENARIO / "cases.yaml")["register"], recorded_at),
        model_text=MODEL_TEXT,
    )
