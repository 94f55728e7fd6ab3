"""Who is calling, and what they may do.

Callers send `Authorization: Bearer <key>`. Keys are looked up by their
SHA-256 digest in the live snapshot every replica holds, so authenticating
costs no database round trip; a client created or revoked anywhere reaches
every replica with the next policy revision. Missing or unknown key: 401.
A scope the route does not accept: 403. Keys are never logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from app.errors import Forbidden

log = structlog.get_logger(__name__)
SCOPES = ("decide", "decide:any", "audit", "manage")
_bearer = HTTPBearer(auto_error=False, description="An API key from `accord clients create`")


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


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require(*accepted: str) -> Callable[..., Caller]:
    """A dependency admitting callers that hold any of the `accepted` scopes."""

    def authenticate(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthenticated("an API key is required (Authorization: Bearer <key>)")
        callers: Mapping[str, Caller] = request.app.state.live.callers
        caller = callers.get(key_digest(credentials.credentials))
        if caller is None:
            raise _unauthenticated("the API key is not valid")
        if not caller.scopes & set(accepted):
            log.warning("request refused: scope", client=caller.client_id, path=request.url.path)
            raise Forbidden(
                f"client '{caller.client_id}' needs one of the scopes: {', '.join(accepted)}"
            )
        return caller

    return authenticate


Decider = Annotated[Caller, Depends(require("decide", "decide:any"))]
Auditor = Annotated[Caller, Depends(require("audit"))]
Manager = Annotated[Caller, Depends(require("manage"))]
Overseer = Annotated[Caller, Depends(require("manage", "audit"))]
AnyClient = Annotated[Caller, Depends(require(*SCOPES))]
