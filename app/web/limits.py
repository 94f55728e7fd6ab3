"""A rate and a concurrency limit per API client, so one noisy partner cannot starve the others.

Each client has a token bucket, filled at `rate_per_second` and holding one second's worth
(at least one request), and a count of its requests in flight. A request over either limit
is answered 429 problem+json with `Retry-After` before it reaches a route: nothing is
decided and nothing is recorded. The counts live in this process's memory, so each worker
(and each replica) counts for itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from app.runtime.callers import Caller
from app.runtime.metrics import CLIENT_LIMIT_REFUSALS
from app.web.problems import problem_response

Limit = Literal["rate", "concurrency"]


@dataclass
class _Allowance:
    """One client's state: tokens in its bucket (as of `counted_at`) and requests in flight."""

    tokens: float
    counted_at: float
    in_flight: int = 0


class ClientLimits:
    """ASGI middleware inside Authenticate: every request carrying a caller counts against
    its client's limits; health and the console carry none and pass untouched."""

    def __init__(self, app: ASGIApp, rate_per_second: float, max_concurrent: int) -> None:
        self.app = app
        self.rate = rate_per_second
        self.burst = max(rate_per_second, 1.0)
        self.max_concurrent = max_concurrent
        self._clients: dict[str, _Allowance] = {}  # one per API client seen: few

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller: Caller | None = scope.get("state", {}).get("caller")
        if caller is None:
            await self.app(scope, receive, send)
            return
        client = caller.client_id
        allowance = self._clients.get(client)
        if allowance is None:
            allowance = self._clients[client] = _Allowance(self.burst, time.monotonic())
        refused = self._take(allowance)
        if refused is not None:
            limit, detail, retry_after = refused
            CLIENT_LIMIT_REFUSALS.labels(client=client, limit=limit).inc()
            await problem_response(
                429,
                "Too many requests",
                f"client '{client}' {detail}; the request was not processed",
                headers={"retry-after": str(retry_after)},
            )(scope, receive, send)
            return
        allowance.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:  # answered, failed or cancelled
            allowance.in_flight -= 1

    def _take(self, allowance: _Allowance) -> tuple[Limit, str, int] | None:
        """Admit one request (a token taken) or say which limit refuses it, and for how long."""
        now = time.monotonic()
        allowance.tokens = min(
            self.burst, allowance.tokens + (now - allowance.counted_at) * self.rate
        )
        allowance.counted_at = now
        if allowance.in_flight >= self.max_concurrent:
            return "concurrency", f"has {self.max_concurrent} requests in flight, its limit", 1
        if allowance.tokens < 1:
            wait = math.ceil((1 - allowance.tokens) / self.rate)
            return "rate", f"is over its rate limit of {self.rate:g} requests per second", wait
        allowance.tokens -= 1
        return None
