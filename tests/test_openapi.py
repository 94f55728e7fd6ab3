"""The committed openapi.yaml is exactly the schema the app serves (`make openapi` rewrites it)."""

from __future__ import annotations

import json

import yaml

from app.main import create_app
from tests.conftest import REPO


def test_committed_openapi_equals_served_schema() -> None:
    committed = yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8"))
    served = json.loads(json.dumps(create_app().openapi()))
    assert committed == served, "openapi.yaml is stale: run `make openapi`"


def test_every_error_response_is_documented_as_problem_json() -> None:
    schema = create_app().openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        f"{method} {path} {status}"
                    )
