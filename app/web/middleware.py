"""ASGI middleware: a request id and one log line per request; HTTP metrics by route
template; a bound on body size."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime.ids import new_id
from app.runtime.metrics import http_answered
from app.web.problems import problem_response

log = structlog.get_logger("accord.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RequestContext:
    """Give each request an id (or keep a well-formed X-Request-ID) and log its outcome.

    Headers are never logged: they carry API keys.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answer a problem and keep the connection usable; nothing was decided.
            log.exception("unhandled error")
            if not response_started:
                await problem_response(
                    500, "Internal error", "the service failed; nothing was decided"
                )(scope, receive, send)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


class HttpMetrics:
    """Count and time every HTTP answer by method, route and status (app/runtime/metrics.py).

    The route is the path template of the route that answered (`/v1/agreements/{agreement_id}`,
    its `path_format`), never the path itself, whose ids would make series without bound (and
    name persons). FastAPI's router leaves the route in scope["route"]; so does the decision
    fast path. A request answered before any route took it (no route has its path, or the edge
    refused it: 401, 429, 413 by its declared length) is `unmatched`; an unusual method is
    `OTHER`. Each
    label set's children are made once (`http_answered`), so a request costs a cached lookup,
    an increment and an observation.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # no answer started: the server answers 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"]
            requests, seconds = http_answered(
                method if method in HTTP_METHODS else "OTHER",
                getattr(scope.get("route"), "path_format", UNMATCHED),
                status,
            )
            requests.inc()
            seconds.observe(time.perf_counter() - started)


class BodyLimit:
    """Refuse a request body over `max_bytes` with 413, whether or not it declares its length.

    `bounds` gives some paths their own limit (a register import is a whole file).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, bounds: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.bounds = dict(bounds or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.bounds.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            await self._refuse(scope, receive, send, max_bytes)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI re-raises an HTTPException met while reading the body,
                    # and the problem handlers turn it into a 413 problem.
                    raise HTTPException(413, "Request body too large")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        detail = f"the body is larger than {max_bytes} bytes"
        await problem_response(413, "Request body too large", detail)(scope, receive, send)
