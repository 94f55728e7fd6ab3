"""Agreement validation: every invalid shared agreement is refused, naming file and place."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.document import AgreementDocument
from app.policy.files import agreement_documents, load_vocabulary
from tests.conftest import REPO, SCENARIO, load_yaml
from tests.scenario import scenario_vocabulary

INVALID = sorted((SCENARIO / "invalid").glob("*.yaml"))


def _expected_text(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: ")
    return first.removeprefix("# expect: ").strip()


def test_every_invalid_file_is_found() -> None:
    assert len(INVALID) >= 7


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_agreement_is_refused_with_its_reason(path: Path) -> None:
    with pytest.raises(AgreementInvalid) as refused:
        parse_agreement(load_yaml(path), scenario_vocabulary(), source=path.name)
    message = str(refused.value)
    assert _expected_text(path) in message
    assert path.name in message


def test_scenario_agreements_are_valid() -> None:
    vocabulary = scenario_vocabulary()
    ids = {
        parse_agreement(document, vocabulary, source=source).id
        for source, document in agreement_documents(SCENARIO / "agreements")
    }
    assert "isa-blackpool-mash" in ids and len(ids) == 7


def test_sample_partnership_is_valid() -> None:
    vocabulary = load_vocabulary(REPO / "policies" / "vocabulary.yaml")
    for source, document in agreement_documents(REPO / "policies" / "agreements"):
        parse_agreement(document, vocabulary, source=source)


def test_all_problems_of_a_document_are_reported_at_once() -> None:
    document = load_yaml(SCENARIO / "agreements" / "isa-blackpool-mash.yaml")
    document["grants"][0]["fields"] = ["health.dental", "criminal.convictions"]
    document["recipients"] = ["la.nowhere"]
    document["lawful_basis"] = {"article6": "public-task"}
    document["colour"] = "blue"
    with pytest.raises(AgreementInvalid) as refused:
        parse_agreement(document, scenario_vocabulary())
    locations = {problem.location for problem in refused.value.problems}
    assert {"grants[0].fields[0]", "recipients[0]", "grants[0].fields", "colour"} <= locations
    assert "break_glass.fields" in locations  # its health field needs article9 too


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"status": "signed"}, "status"),
        ({"valid_from": "first of april"}, "valid_from"),
        ({"valid_until": None}, "valid_until"),
        ({"grants": []}, "grants"),
        ({"id": "Bad Id!"}, "id"),
        ({"providers": "police"}, "providers"),
    ],
)
def test_malformed_values_are_named(change: dict[str, object], location: str) -> None:
    document = {**load_yaml(SCENARIO / "agreements" / "isa-early-help.yaml"), **change}
    with pytest.raises(AgreementInvalid) as refused:
        parse_agreement(document, scenario_vocabulary())
    assert location in [problem.location for problem in refused.value.problems]


def test_age_conditions_must_be_whole_years() -> None:
    document = load_yaml(SCENARIO / "agreements" / "isa-adult-safeguarding.yaml")
    document["grants"][0]["subject"] = {"min_age": "eighteen", "shoe_size": 9}
    with pytest.raises(AgreementInvalid) as refused:
        parse_agreement(document, scenario_vocabulary())
    locations = [problem.location for problem in refused.value.problems]
    assert "grants[0].subject.min_age" in locations
    assert "grants[0].subject.shoe_size" in locations


def test_the_shape_is_checked_by_the_document_model_and_named_by_place() -> None:
    document = load_yaml(SCENARIO / "agreements" / "isa-blackpool-mash.yaml")
    document["valid_from"] = 20250101  # a number is not a date, whatever pydantic would allow
    document["lawful_basis"]["artcle9"] = "typo"
    document["grants"][0]["requires_consent"] = "yes"
    document["grants"][0]["obligations"] = [{"field": "contact.nope", "mask": "m"}, {"mask": 3}]
    document["grants"].append("not a grant")
    document["break_glass"]["fields"] = []
    with pytest.raises(AgreementInvalid) as refused:
        parse_agreement(document, scenario_vocabulary())
    problems = {problem.location: problem.message for problem in refused.value.problems}
    assert problems["valid_from"] == "must be a date (YYYY-MM-DD), got 20250101"
    assert problems["lawful_basis.artcle9"].startswith("is not a field of lawful_basis")
    assert "article9" in problems["lawful_basis.artcle9"]  # names what is known
    assert problems["grants[0].requires_consent"] == "must be true or false"
    assert problems["grants[0].obligations[0].field"] == "unknown field 'contact.nope'"
    assert problems["grants[0].obligations[1].field"] == "is required"
    assert problems["grants[1]"] == "must be a mapping"
    assert problems["break_glass.fields"] == "must be a non-empty list of fields"


def test_a_valid_document_becomes_the_same_agreement_as_its_model() -> None:
    document = load_yaml(SCENARIO / "agreements" / "isa-blackpool-mash.yaml")
    shaped = AgreementDocument.model_validate(document)
    agreement = parse_agreement(document, scenario_vocabulary(), version=3)
    assert (agreement.id, agreement.version, agreement.status) == (shaped.id, 3, shaped.status)
    assert agreement.grants[0].subject.max_age == 17
    assert agreement.grants[0].fields == tuple(shaped.grants[0].fields)
    assert agreement.lawful_basis["legislation"] == shaped.lawful_basis.legislation
