"""The decision routes' fast path: FastAPI declares them, a lean handler answers them.

Partner systems ask before every field they show, so a decision's cost is the product's.
FastAPI's per-request machinery (routing, the dependency solver, its request and exit
stacks) cost more than the decision itself (docs/performance.md). So:

- `DecisionRoute` is an APIRoute like any other: FastAPI makes the OpenAPI document from
  its models, and its own handler answers every request the fast path does not take.
- `DecisionFastPath` is the innermost of Accord's ASGI middleware, so Authenticate,
  ClientLimits, BodyLimit and the access log have seen the request as for every route.
  A POST to a decision route with a JSON body and no query string is validated by the
  route's pydantic model straight from the bytes (pydantic-core's `validate_json`),
  scope-checked by the same `authorized` as every route, and handed to the endpoint.
  A body the model refuses goes on to FastAPI, replayed, and is refused there as it
  always was; an error the endpoint raises is answered by the app's own exception
  handler for it. Every refusal is the problem+json it always was, made in one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, get_type_hints

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.web.auth import DECIDE_SCOPES, authorized

# The parameters a decision endpoint takes, in order: the body, then what its
# dependencies give (Decider, Decisions, RequestId).
ENDPOINT_PARAMETERS = ["body", "caller", "decisions", "request_id"]


class DecisionRoute(APIRoute):
    """An APIRoute for an endpoint `(body, caller, decisions, request_id) -> Response`."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if list(inspect.signature(endpoint).parameters) != ENDPOINT_PARAMETERS:
            raise TypeError(f"{endpoint.__name__} must take {', '.join(ENDPOINT_PARAMETERS)}")
        self.body_model: type[BaseModel] = get_type_hints(endpoint)["body"]


def _json_media_type(scope: Scope) -> bool:
    """application/json or application/*+json: a body FastAPI would read as JSON."""
    declared = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
    media_type = declared.partition(b";")[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read given back first."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class DecisionFastPath:
    """ASGI middleware: the decision routes' well-formed requests, answered without FastAPI's
    per-request machinery; everything else passes to the app untouched."""

    def __init__(self, app: ASGIApp, routes: Iterable[Any]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes if isinstance(route, DecisionRoute)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]
            else None
        )
        if route is None or not _json_media_type(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as FastAPI's router sets it: HTTP metrics label its template
        request = Request(scope, receive)
        try:
            body = await request.body()
            try:
                parsed = route.body_model.model_validate_json(body)
            except ValidationError:
                await self.app(scope, _replay(body, receive), send)  # FastAPI refuses it
                return
            response = await route.endpoint(
                parsed,
                authorized(scope, DECIDE_SCOPES),
                scope["app"].state.decisions,
                scope["state"]["request_id"],
            )
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Any:
        """The app's own answer to `exc` (app/web/problems.py); re-raised if it has none."""
        handlers = request.app.exception_handlers
        for kind in type(exc).__mro__:
            if kind in handlers:
                return await handlers[kind](request, exc)
        raise exc
