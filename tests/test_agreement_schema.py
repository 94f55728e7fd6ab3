"""`accord agreements schema` prints the agreement format's JSON Schema, and every real
agreement file is valid against it, so an editor using it flags only real mistakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from app.policy.document import JSON_SCHEMA_DIALECT, AgreementDocument
from tests.conftest import REPO, SCENARIO, accord, load_yaml

AGREEMENT_FILES = sorted(
    [*(REPO / "policies" / "agreements").glob("*.yaml"), *(SCENARIO / "agreements").glob("*.yaml")]
)


def _as_json(document: Any) -> Any:
    """What an editor sees in a YAML file: dates are text (YAML 1.2), as the API receives."""
    return json.loads(json.dumps(document, default=str))


@pytest.fixture(scope="module")
def printed() -> dict[str, Any]:
    result = accord("agreements", "schema", env={})
    schema: dict[str, Any] = json.loads(result.stdout)
    assert result.stdout.startswith("{\n  ")  # pretty, for a person to read
    return schema


@pytest.fixture(scope="module")
def validator(printed: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for(printed, validate_formats=True)


def test_the_printed_schema_is_the_document_models(printed: dict[str, Any]) -> None:
    assert printed["$schema"] == JSON_SCHEMA_DIALECT
    assert printed["title"]
    assert {key: value for key, value in printed.items() if key != "$schema"} == (
        AgreementDocument.model_json_schema()
    )
    jsonschema_rs.meta.validate(printed)  # a well-formed 2020-12 schema


def test_every_agreement_file_is_valid_against_it(validator: Any) -> None:
    assert len(AGREEMENT_FILES) >= 11
    for path in AGREEMENT_FILES:
        document = _as_json(load_yaml(path))
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == [], f"{path.name}: {errors}"
        AgreementDocument.model_validate(document)


@pytest.mark.parametrize(
    "change",
    [
        {"colour": "blue"},
        {"status": "signed"},
        {"valid_until": "first of april"},
        {"grants": []},
        {"id": "Bad Id!"},
        {"providers": "police"},
        {"grants": [{"purposes": ["safeguarding"], "fields": []}]},
        {"grants": [{"purposes": ["safeguarding"], "fields": ["identity"], "subject": {"x": 1}}]},
    ],
)
def test_a_shape_mistake_is_flagged_by_the_schema_too(
    validator: Any, change: dict[str, Any]
) -> None:
    document = {**_as_json(load_yaml(SCENARIO / "agreements" / "isa-early-help.yaml")), **change}
    assert not validator.is_valid(document)


def test_the_shared_invalid_files_that_are_wrong_in_shape_are_flagged(validator: Any) -> None:
    empty_grant = Path(SCENARIO / "invalid" / "empty-grant.yaml")
    assert not validator.is_valid(_as_json(load_yaml(empty_grant)))
