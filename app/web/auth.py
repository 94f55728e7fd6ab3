"""Who is calling, and what they may do, at the HTTP edge.

Callers send `Authorization: Bearer <key>`. Keys are looked up by their
SHA-256 digest among the callers every replica holds (app/runtime/callers.py),
so authenticating costs no database round trip. Missing or unknown key: 401.
A scope the route does not accept: 403. Keys are never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden, PolicyUnavailable
from app.runtime.callers import SCOPES, Caller, key_digest
from app.web.problems import problem_response

log = structlog.get_logger(__name__)


PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
CONSOLE_PREFIX = "/console"  # the console signs in with a key kept in a cookie


class Authenticate:
    """ASGI middleware: every request but health and the console carries a known key.

    It runs before the body is read, so an unauthenticated caller learns nothing
    about its body's validity; the caller it finds waits in the request state
    for the routes' scope checks.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(CONSOLE_PREFIX):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            await _unauthenticated("an API key is required (Authorization: Bearer <key>)")(
                scope, receive, send
            )
            return
        try:
            callers: Mapping[str, Caller] = scope["app"].state.live.callers
        except PolicyUnavailable as exc:
            await problem_response(503, "Policy unavailable", str(exc))(scope, receive, send)
            return
        caller = callers.get(key_digest(key.strip()))
        if caller is None:
            await _unauthenticated("the API key is not valid")(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def _unauthenticated(detail: str) -> Response:
    return problem_response(401, "Unauthenticated", detail, headers={"www-authenticate": "Bearer"})


def authorized(scope: Scope, accepted: frozenset[str]) -> Caller:
    """The caller Authenticate found, if it holds any of the `accepted` scopes; else Forbidden."""
    caller: Caller = scope["state"]["caller"]
    if not caller.scopes & accepted:
        log.warning("request refused: scope", client=caller.client_id, path=scope["path"])
        raise Forbidden(
            f"client '{caller.client_id}' needs one of the scopes: {', '.join(sorted(accepted))}"
        )
    return caller


def require(*accepted: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting callers that hold any of the `accepted` scopes."""
    scopes = frozenset(accepted)

    async def authorize(request: Request) -> Caller:
        return authorized(request.scope, scopes)

    return authorize


DECIDE_SCOPES = frozenset({"decide", "decide:any"})
Decider = Annotated[Caller, Depends(require(*DECIDE_SCOPES))]
Auditor = Annotated[Caller, Depends(require("audit"))]
Manager = Annotated[Caller, Depends(require("manage"))]
Overseer = Annotated[Caller, Depends(require("manage", "audit"))]
# Any scope of the API; a `metrics` key reads /metrics only (app/web/health.py).
API_SCOPES = frozenset(SCOPES) - {"metrics"}
AnyClient = Annotated[Caller, Depends(require(*API_SCOPES))]
