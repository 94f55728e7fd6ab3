"""The OpenAPI document: every error as the problem+json it really is, the bearer scheme."""

from __future__ import annotations

from typing import Any

from app.web.auth import PUBLIC_PATHS
from app.web.problems import PROBLEM_JSON, Problem

COMMON_ERRORS = {
    "401": "No API key, or an unknown one",
    "403": "The key's scopes or agencies do not allow this",
    "429": "The client is over its rate or concurrency limit; nothing was done",
    "503": "Unavailable: no policy loaded, or the database cannot be reached",
}
# A 429 says when to try again (app/web/limits.py).
RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}
# Authenticate has checked the key before a route runs; the document declares the
# scheme on every route but health.
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key from `accord clients create`",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe every error response as the problem+json body it really is.

    FastAPI documents errors as application/json, and 422 as its own
    validation shape; Accord answers every error with `Problem`. Every route
    but health is declared to need the bearer key (the Authenticate middleware
    checks it before any route runs). The answers
    every authenticated route can give (no key, wrong scope, over the client's
    limits, a body too large, no policy or database) are added where the route
    does not list them.
    """
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path not in PUBLIC_PATHS:
                operation["security"] = [{"HTTPBearer": []}]
                expected = dict(COMMON_ERRORS)
                if "requestBody" in operation:
                    expected["400"] = "The body could not be read as JSON"
                    expected["413"] = "Request body too large"
                if "requestBody" in operation or operation.get("parameters"):
                    expected["422"] = "Invalid request"
                for status, description in expected.items():
                    responses.setdefault(status, {"description": description})
                responses["429"].setdefault("headers", RETRY_AFTER)
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = problem_content
    schema.setdefault("components", {})["securitySchemes"] = {"HTTPBearer": BEARER_SCHEME}
    components = schema["components"].setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    return schema
