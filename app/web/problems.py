"""Every error leaves as application/problem+json (RFC 9457) naming the bad part."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from app.types import UNPAIRED_SURROGATE

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


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
    """The one builder of problem+json answers; a Response is also an ASGI app, so
    middleware below FastAPI's handlers sends it with `await response(scope, receive, send)`."""
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
        if error.get("type") == "string_unicode":  # pydantic's own words name no character
            message = UNPAIRED_SURROGATE
        name = _location(tuple(error.get("loc", ())))
        if all(param["name"] != name for param in params):  # one reason per place
            params.append({"name": name, "reason": message})
    detail = "; ".join(f"{p['name']}: {p['reason']}" for p in params)
    return problem_response(422, "Invalid request", detail, params)


async def _unprocessable(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unprocessable)
    params = [{"name": name, "reason": reason} for name, reason in exc.invalid_params()]
    return problem_response(422, exc.title, str(exc), params)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_methods_allowed(request))
    return problem_response(exc.status_code, str(exc.detail), str(exc.detail), headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _methods_allowed(request: Request) -> list[str]:
    """Every method some route takes at this path, asked of the router itself: Starlette's
    405 names only the first route that matched, though GET and POST on one path are two."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _simple(status: int, title: str) -> Any:
    async def handler(_: Request, exc: Exception) -> Response:
        return problem_response(status, title, str(exc) or title)

    return handler


async def _unavailable(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unavailable)
    log.error(exc.title, error=str(exc))
    return problem_response(503, exc.title, str(exc) or exc.title)


async def _concurrent_change(_: Request, exc: Exception) -> Response:
    # Every create and state change checks first, so a key the database still refuses was
    # taken by a concurrent request between the check and the write. No values are logged.
    assert isinstance(exc, IntegrityError)
    log.warning("write refused by a concurrent change", error_type=type(exc.orig).__name__)
    return problem_response(
        409, "Conflict", "a concurrent request changed this first; read it again and retry"
    )


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    log.error("database unavailable", error=str(exc).splitlines()[0])
    return problem_response(503, "Database unavailable", "the database cannot be reached")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Unprocessable, _unprocessable)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(NotFound, _simple(404, "Not found"))
    app.add_exception_handler(Conflict, _simple(409, "Conflict"))
    app.add_exception_handler(Forbidden, _simple(403, "Forbidden"))
    app.add_exception_handler(UnsupportedMediaType, _simple(415, "Unsupported media type"))
    app.add_exception_handler(Unavailable, _unavailable)
    # The database is unreachable or refuses work (down, read-only): retry later.
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(IntegrityError, _concurrent_change)
