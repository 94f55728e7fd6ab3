"""Who is calling, and what they may do.

Callers send `Authorization: Bearer <key>`. Keys are looked up by their
SHA-256 digest in the live snapshot every replica holds, so authenticating
costs no database round trip; a client created or revoked anywhere reaches
every replica with the next policy revision. Missing or unknown key: 401.
A scope the route does not accept: 403. Keys are never logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden, PolicyUnavailable
from app.middleware import send_problem

log = structlog.get_logger(__name__)
SCOPES = ("decide", "decide:any", "audit", "manage")
# Authenticate has checked the key before a route runs; openapi.yaml declares the
# scheme on every route but health (app/problems.py, document_problems).
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key from `accord clients create`",
}


@dataclass(frozen=True)
class Caller:
    client_id: str
    agencies: frozenset[str]
    scopes: frozenset[str]

    def check_may_decide(self, *, requester: str, holder: str) -> None:
        """A `decide` client asks only where one of its agencies is requester or holder."""
        if "decide:any" in self.scopes or {requester, holder} & self.agencies:
            return
        log.warning(
            "decision refused: agency not bound to client",
            client=self.client_id,
            requester=requester,
            holder=holder,
        )
        raise Forbidden(f"client '{self.client_id}' acts for neither {requester} nor {holder}")


def key_digest(key: str) -> str:
    """Keys are 256 random bits, so a plain SHA-256 is as hard to reverse as any KDF."""
    return hashlib.sha256(key.encode()).hexdigest()


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
            await _refuse_401(send, "an API key is required (Authorization: Bearer <key>)")
            return
        try:
            callers: Mapping[str, Caller] = scope["app"].state.live.callers
        except PolicyUnavailable as exc:
            await send_problem(send, 503, "Policy unavailable", str(exc))
            return
        caller = callers.get(key_digest(key.strip()))
        if caller is None:
            await _refuse_401(send, "the API key is not valid")
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def _refuse_401(send: Send, detail: str) -> None:
    await send_problem(
        send, 401, "Unauthenticated", detail, headers=[(b"www-authenticate", b"Bearer")]
    )


def require(*accepted: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting callers that hold any of the `accepted` scopes."""

    async def authorize(request: Request) -> Caller:
        caller: Caller = request.state.caller
        if not caller.scopes & set(accepted):
            log.warning("request refused: scope", client=caller.client_id, path=request.url.path)
            raise Forbidden(
                f"client '{caller.client_id}' needs one of the scopes: {', '.join(accepted)}"
            )
        return caller

    return authorize


Decider = Annotated[Caller, Depends(require("decide", "decide:any"))]
Auditor = Annotated[Caller, Depends(require("audit"))]
Manager = Annotated[Caller, Depends(require("manage"))]
Overseer = Annotated[Caller, Depends(require("manage", "audit"))]
AnyClient = Annotated[Caller, Depends(require(*SCOPES))]
