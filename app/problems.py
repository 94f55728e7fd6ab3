"""Every error leaves as application/problem+json (RFC 9457) naming the bad part."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from app.audit.writer import AuditUnavailable
from app.auth import BEARER_SCHEME, PUBLIC_PATHS
from app.errors import Conflict, Forbidden, InvalidRequest, NotFound, PolicyUnavailable
from app.policy.agreements import AgreementInvalid

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
COMMON_ERRORS = {
    "401": "No API key, or an unknown one",
    "403": "The key's scopes or agencies do not allow this",
    "503": "Unavailable: no policy loaded, or the database cannot be reached",
}


class InvalidParam(BaseModel):
    name: str
    reason: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    invalid_params: list[InvalidParam] | None = None


def problem_response(
    status: int,
    title: str,
    detail: str,
    invalid_params: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if invalid_params:
        body["invalid_params"] = invalid_params
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _location(loc: tuple[Any, ...]) -> str:
    """`subject.attributes.age`, `fields[2]`: pydantic's location without union-branch tags."""
    parts = [
        str(part)
        for part in loc
        if part not in ("body", "query", "path", "header") and not _is_union_tag(str(part))
    ]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def _is_union_tag(part: str) -> bool:
    return any(mark in part for mark in "[('") and not part.isdigit()


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    params: list[dict[str, str]] = []
    for error in exc.errors():
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        name = _location(tuple(error.get("loc", ())))
        if all(param["name"] != name for param in params):  # one reason per place
            params.append({"name": name, "reason": message})
    detail = "; ".join(f"{p['name']}: {p['reason']}" for p in params)
    return problem_response(422, "Invalid request", detail, params)


async def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    return problem_response(
        422, "Invalid request", str(exc), [{"name": exc.location, "reason": exc.message}]
    )


async def _agreement_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgreementInvalid)
    params = [{"name": p.location or "document", "reason": p.message} for p in exc.problems]
    return problem_response(422, "Invalid agreement", str(exc), params)


async def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem_response(
        exc.status_code, str(exc.detail), str(exc.detail), headers=dict(exc.headers or {})
    )


def _simple(status: int, title: str) -> Any:
    async def handler(_: Request, exc: Exception) -> Response:
        if status >= 500:
            log.error(title, error=str(exc))
        return problem_response(status, title, str(exc) or title)

    return handler


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    log.error("database unavailable", error=str(exc).splitlines()[0])
    return problem_response(503, "Database unavailable", "the database cannot be reached")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(AgreementInvalid, _agreement_invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(NotFound, _simple(404, "Not found"))
    app.add_exception_handler(Conflict, _simple(409, "Conflict"))
    app.add_exception_handler(Forbidden, _simple(403, "Forbidden"))
    app.add_exception_handler(
        AuditUnavailable, _simple(503, "Audit unavailable: no decision was made")
    )
    app.add_exception_handler(PolicyUnavailable, _simple(503, "Policy unavailable"))
    # The database is unreachable or refuses work (down, read-only): retry later.
    app.add_exception_handler(OperationalError, _database_unavailable)


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe every error response as the problem+json body it really is.

    FastAPI documents errors as application/json, and 422 as its own
    validation shape; Accord answers every error with `Problem`. Every route
    but health is declared to need the bearer key (the Authenticate middleware
    checks it before any route runs). The answers
    every authenticated route can give (no key, wrong scope, a body too large,
    no policy or database) are added where the route does not list them.
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
