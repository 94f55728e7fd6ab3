"""API callers: who a key belongs to, for which agencies, with which scopes.

Keys are stored and looked up by their SHA-256 digest; a replica keeps every
live client in memory, so authenticating costs no database round trip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import structlog

from app.errors import Forbidden

log = structlog.get_logger(__name__)
# `metrics` reads GET /metrics and nothing else (see ACCORD_REQUIRE_METRICS_SCOPE).
SCOPES = ("decide", "decide:any", "audit", "manage", "metrics")


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
