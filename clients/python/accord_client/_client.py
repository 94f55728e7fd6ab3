"""A typed Python client for Accord's decision API, for partner systems.

The `accord-client` distribution (`clients/python/`): it depends on httpx,
pydantic and the standard library only, never on the Accord service itself.
Import it as `accord_client`; this module is private, its public names are
re-exported by the package.

    with AccordClient("https://accord.example", api_key=key) as accord:
        shown = accord.allowed_fields(
            requester="la.riverton.childrens-services", holder="police.riverton",
            person="P-1001", age=12, purpose="safeguarding.children",
            fields=["identity.name", "criminal.convictions"], user="sw.jones",
        )

`AccordClient` and `AsyncAccordClient` share everything but the sending: the
base class builds each request and reads each answer; the two subclasses only
send it (and wait between attempts) in their own way.

Every failure is an `AccordError` and means **no decision**: a partner system
that catches one must treat it as a deny. `allowed_fields` returns a field
only when Accord answered permit for it.

Retries: only a failure to connect (connection refused, a connect timeout)
and a connection closed before any answer (httpx.RemoteProtocolError) are
retried, `retries` times, pausing `backoff` seconds and doubling (at most
2 s), then `AccordUnreachable` is raised. After a closed connection Accord may
already have decided and recorded the question; asking again is acceptable
because a decision is a read that gives the same answer to the same question,
and the audit table then truthfully shows it asked twice. A read timeout is
not retried (`NoAnswer`): Accord may still be deciding. No HTTP status is ever
retried: a 503 means Accord would not decide, and is raised as `Unavailable`.
The API key is sent as a bearer token; it is never logged, and neither a
client's repr nor an error shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Any, Generic, Literal, Required, Self, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "AccordClient",
    "AccordError",
    "AccordUnreachable",
    "AsyncAccordClient",
    "BatchDecision",
    "Decision",
    "Forbidden",
    "InvalidParam",
    "InvalidRequest",
    "NoAnswer",
    "Obligation",
    "Question",
    "Reason",
    "RequestTooLarge",
    "Route",
    "TooManyRequests",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedAnswer",
]

log = logging.getLogger("accord.client")

# Accord waits up to 5 s (ACCORD_AUDIT_TIMEOUT_SECONDS) for a decision's audit
# record before it answers 503, so reading waits longer than that.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
MAX_BACKOFF_SECONDS = 2.0
T = TypeVar("T")
Fields = Sequence[str] | Literal["*"]


# -- What the API answers -----------------------------------------------------


class _Answer(BaseModel):
    # Members a later Accord adds are ignored; a missing or mistyped one is an error.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Reason(_Answer):
    """Why: a stable code and the agreement, restriction or consent behind it."""

    code: str
    message: str
    agreement_id: str | None = None
    agreement_version: int | None = None
    restriction_id: str | None = None
    consent_id: str | None = None


class Obligation(_Answer):
    """A condition on a permit, e.g. show `contact.address` masked to its postcode district."""

    field: str
    mask: str


class Route(_Answer):
    """A lawful way a denied question could be permitted between the same parties:
    `consent`, `break-glass`, `agreement-not-in-force` or `subject-condition`. Not a
    permission: the changed question must be asked (and permitted) before anything is
    shown."""

    kind: str
    agreement_id: str
    agreement_version: int
    message: str
    status: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    min_age: int | None = None
    max_age: int | None = None
    age_unknown: bool = False


class Decision(_Answer):
    """One field's decision, as `POST /v1/decisions` answers it."""

    decision_id: str | None = Field(description="The audit row's id; None in a simulation")
    field: str
    decision: Literal["permit", "deny"]
    reasons: tuple[Reason, ...] = Field(min_length=1)
    obligations: tuple[Obligation, ...]
    routes: tuple[Route, ...] = ()  # a deny's lawful routes (an older Accord sends none)
    break_glass: bool
    policy_revision: int
    decided_at: datetime

    @property
    def is_permit(self) -> bool:
        return self.decision == "permit"

    @property
    def reason(self) -> Reason:
        """The reason that decided."""
        return self.reasons[0]


class BatchDecision(_Answer):
    """Many fields of one person, as `POST /v1/decisions/batch` (or `/v1/simulate`) answers."""

    decisions: tuple[Decision, ...]
    permitted: tuple[str, ...]
    policy_revision: int
    decided_at: datetime
    simulation: bool = False

    def allowed(self, asked: Sequence[str] | None = None) -> frozenset[str]:
        """The fields that may be shown: failing closed, only a field that has a permit
        decision, no deny decision, is in `permitted` and (when given) was asked for."""
        permits = {d.field for d in self.decisions if d.decision == "permit"}
        denies = {d.field for d in self.decisions if d.decision != "permit"}
        allowed = (permits - denies) & set(self.permitted)
        if asked is not None:
            allowed &= set(asked)
        return frozenset(allowed)


class InvalidParam(_Answer):
    """One bad part of a request: where (`field`, `subject.attributes.age`) and why."""

    name: str
    reason: str


class _Problem(BaseModel):
    """An application/problem+json body (RFC 9457), keeping any other members."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str | None = None
    detail: str | None = None
    invalid_params: list[InvalidParam] = Field(default_factory=list)


# -- Errors: every one means no decision ----------------------------------------


class AccordError(Exception):
    """No decision. `status` is the HTTP status, or None when no answer came."""

    def __init__(
        self,
        *,
        status: int | None,
        title: str,
        detail: str,
        type: str = "about:blank",
        invalid_params: Sequence[InvalidParam] = (),
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.invalid_params = tuple(invalid_params)
        self.problem: Mapping[str, Any] = dict(problem or {})  # the whole body as received
        self.request_id = request_id  # Accord's X-Request-ID, for its logs
        super().__init__(self._summary())

    def _summary(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}: {self.detail}{tail}"


class InvalidRequest(AccordError):
    """400 or 422: the request was malformed or named something not in the vocabulary;
    `invalid_params` names the bad part."""


class Unauthenticated(AccordError):
    """401: no API key, or one Accord does not know (revoked, mistyped)."""


class Forbidden(AccordError):
    """403: the key's scopes or agencies do not allow this request."""


class RequestTooLarge(AccordError):
    """413: the body is over Accord's limit; ask for fewer fields at once."""


class TooManyRequests(AccordError):
    """429: this client is over its rate or concurrency limit; nothing was decided.
    `retry_after` is how many seconds Accord asked it to wait (None if it did not say)."""

    def __init__(self, *, retry_after: int | None, **problem: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**problem)


class Unavailable(AccordError):
    """503 (or a proxy's 502/504): Accord could not decide, e.g. it could not record the
    decision in its audit table. Never retried by this client."""


class UnexpectedAnswer(AccordError):
    """A success status whose body is not the documented answer: treated as no decision."""


class NoAnswer(AccordError):
    """The request was sent, or may have been, but no answer came (e.g. a read timeout).
    Not retried: Accord may still be working on it."""


class AccordUnreachable(AccordError):
    """No connection to Accord after every attempt (`attempts` = retries + 1)."""

    def __init__(self, *, attempts: int, **problem: Any) -> None:
        self.attempts = attempts
        super().__init__(**problem)


_ERROR_BY_STATUS: dict[int, type[AccordError]] = {
    400: InvalidRequest,
    422: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    413: RequestTooLarge,
    429: TooManyRequests,
    502: Unavailable,  # a load balancer with no replica behind it
    503: Unavailable,
    504: Unavailable,
}


def _error_from(response: httpx.Response) -> AccordError:
    """The error an HTTP error status stands for, with the problem's members if it sent one."""
    members: dict[str, Any] = {}
    try:
        body = json.loads(response.content)
        if isinstance(body, dict):
            members = body
    except ValueError:
        pass
    try:
        problem = _Problem.model_validate(members)
    except ValidationError:
        problem = _Problem()
    text = " ".join(response.text.split())[:200] if not members else ""
    fields: dict[str, Any] = {
        "status": response.status_code,
        "title": problem.title or response.reason_phrase or "Error",
        "detail": problem.detail or text or "(no detail)",
        "type": problem.type,
        "invalid_params": problem.invalid_params,
        "problem": members,
        "request_id": response.headers.get("x-request-id"),
    }
    if response.status_code == 429:
        wait = response.headers.get("retry-after", "")
        return TooManyRequests(retry_after=int(wait) if wait.isdigit() else None, **fields)
    return _ERROR_BY_STATUS.get(response.status_code, AccordError)(**fields)


# -- What is asked --------------------------------------------------------------


class Question(TypedDict, total=False):
    """Who asks whom about which person, why, and on behalf of which user.

    `person` is the subject's id; `age` or `birth_date` the attributes the
    partner system knows (an age condition with no age known denies).
    `emergency` needs a `justification` and may open break-glass access.
    """

    requester: Required[str]
    holder: Required[str]
    person: Required[str]
    purpose: Required[str]
    age: int | None
    birth_date: date | None
    user: str | None
    case_ref: str | None
    emergency: bool | None
    justification: str | None


_REQUIRED = frozenset(Question.__required_keys__)
_KNOWN = _REQUIRED | Question.__optional_keys__


def _request_body(question: Question) -> dict[str, Any]:
    """The body members every decision request has, from a question."""
    unknown = sorted(set(question) - _KNOWN)
    missing = sorted(_REQUIRED - set(question))
    if unknown or missing:
        raise TypeError(f"unexpected arguments {unknown}, missing arguments {missing}")
    attributes: dict[str, Any] = {}
    if question.get("age") is not None:
        attributes["age"] = question.get("age")
    birth_date = question.get("birth_date")
    if birth_date is not None:
        attributes["birth_date"] = birth_date.isoformat()
    given = {
        "user": question.get("user"),
        "case_ref": question.get("case_ref"),
        "emergency": question.get("emergency"),
        "justification": question.get("justification"),
    }
    context = {name: value for name, value in given.items() if value is not None}
    return {
        "requester": question["requester"],
        "holder": question["holder"],
        "subject": {"id": question["person"], "attributes": attributes},
        "purpose": question["purpose"],
        "context": context,
    }


def _decision_of(field: str, content: bytes) -> Decision:
    decision = Decision.model_validate_json(content)
    if decision.field != field:  # never apply one field's answer to another
        raise ValueError(f"asked about {field!r}, answered about {decision.field!r}")
    return decision


def _fields(fields: Fields) -> list[str] | Literal["*"]:
    if fields == "*":
        return "*"
    if isinstance(fields, str):  # a str is a Sequence[str] too: refuse it, do not split it
        raise TypeError('fields is a list of field names, or "*" for every field')
    return list(fields)


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """A request ready to send, and how to read its successful answer."""

    request: httpx.Request
    read: Callable[[bytes], T]


# -- The shared client ----------------------------------------------------------


class _AccordBase:
    """Builds requests and reads answers, and decides on retries (see the module's
    docstring); subclasses only send and wait."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout,
        retries: int,
        backoff: float,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http:// or https:// URL")
        if not api_key or any(char.isspace() for char in api_key):
            raise ValueError("api_key must be a non-empty token")  # the key is never echoed
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.base_url = str(url).rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        # httpx.Headers shows the authorization header as [secure] in its repr.
        self._headers = httpx.Headers(
            {
                "authorization": f"Bearer {api_key}",
                "accept": "application/json, application/problem+json",
                "user-agent": "accord-client/1",
            }
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, retries={self.retries})"

    def _post(self, path: str, body: Mapping[str, Any], read: Callable[[bytes], T]) -> _Call[T]:
        request = httpx.Request("POST", self.base_url + path, headers=self._headers, json=body)
        return _Call(request, read)

    def _decide(self, field: str, question: Question) -> _Call[Decision]:
        body = {**_request_body(question), "field": field}
        return self._post("/v1/decisions", body, lambda content: _decision_of(field, content))

    def _decide_batch(self, fields: Fields, question: Question) -> _Call[BatchDecision]:
        body = {**_request_body(question), "fields": _fields(fields)}
        return self._post("/v1/decisions/batch", body, BatchDecision.model_validate_json)

    def _allowed_fields(self, fields: Fields, question: Question) -> _Call[frozenset[str]]:
        asked = _fields(fields)
        call = self._decide_batch(asked, question)
        return _Call(
            call.request,
            lambda content: call.read(content).allowed(None if asked == "*" else asked),
        )

    def _simulate(
        self, fields: Fields, agreement: Mapping[str, Any] | None, question: Question
    ) -> _Call[BatchDecision]:
        body: dict[str, Any] = {"request": {**_request_body(question), "fields": _fields(fields)}}
        if agreement is not None:
            body["agreement"] = dict(agreement)
        return self._post("/v1/simulate", body, BatchDecision.model_validate_json)

    def _answer(self, call: _Call[T], response: httpx.Response) -> T:
        """The answer read, or the error the response stands for."""
        if not response.is_success:
            raise _error_from(response)
        try:
            return call.read(response.content)
        except ValueError as exc:  # pydantic's ValidationError included
            raise UnexpectedAnswer(
                status=response.status_code,
                title="Unexpected answer",
                detail=f"the body is not the documented answer: {exc}",
                request_id=response.headers.get("x-request-id"),
            ) from exc

    def _pause_after(self, error: httpx.TransportError, attempt: int, call: _Call[Any]) -> float:
        """How long to wait before trying again after a failed attempt; raises if not."""
        where = f"{call.request.method} {call.request.url}"
        if not isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError
        ):
            raise NoAnswer(
                status=None,
                title="No answer from Accord",
                detail=f"{where}: {type(error).__name__}: {error}",
            ) from error
        if attempt > self.retries:
            raise AccordUnreachable(
                attempts=attempt,
                status=None,
                title="Accord unreachable",
                detail=f"{where}: {type(error).__name__}: {error} "
                f"(after {attempt} attempt{'s' if attempt > 1 else ''})",
            ) from error
        pause = min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        log.warning(
            "no connection to Accord: %s: %s: %s (attempt %d of %d); retrying in %.2f s",
            where,
            type(error).__name__,
            error,
            attempt,
            self.retries + 1,
            pause,
        )
        return pause


class AccordClient(_AccordBase):
    """Accord's decision API, over a pooled httpx.Client. Use it as a context manager or
    call `close()`; share one across a process's threads.

    `timeout` bounds each attempt (default 2 s to connect, 10 s otherwise);
    `retries` connection failures are retried, never an HTTP status (see the
    module's docstring); `verify` is httpx's TLS verification.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.1,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.Client(timeout=self.timeout, verify=verify)

    def decide(self, *, field: str, **question: Unpack[Question]) -> Decision:
        """May the requester see this field of this person for this purpose?"""
        return self._send(self._decide(field, question))

    def decide_batch(self, *, fields: Fields, **question: Unpack[Question]) -> BatchDecision:
        """Many fields of one person in one call ("*": every field of the vocabulary)."""
        return self._send(self._decide_batch(fields, question))

    def allowed_fields(self, *, fields: Fields, **question: Unpack[Question]) -> frozenset[str]:
        """The fields Accord permits, out of those asked for, in one batch call."""
        return self._send(self._allowed_fields(fields, question))

    def why_not(self, *, field: str, **question: Unpack[Question]) -> tuple[Route, ...]:
        """Ask for one field (a decision, recorded as any is) and return the lawful routes
        to a permit if it is denied; () if it is permitted or no route exists."""
        return self._send(self._decide(field, question)).routes

    def simulate(
        self,
        *,
        fields: Fields,
        agreement: Mapping[str, Any] | None = None,
        **question: Unpack[Question],
    ) -> BatchDecision:
        """Evaluate without recording, optionally with a draft agreement in force
        (needs a `manage` or `audit` key)."""
        return self._send(self._simulate(fields, agreement, question))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.send(call.request)
            except httpx.TransportError as error:
                time.sleep(self._pause_after(error, attempt, call))
            else:
                return self._answer(call, response)


class AsyncAccordClient(_AccordBase):
    """As `AccordClient`, for asyncio, over a pooled httpx.AsyncClient."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.1,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.AsyncClient(timeout=self.timeout, verify=verify)

    async def decide(self, *, field: str, **question: Unpack[Question]) -> Decision:
        """May the requester see this field of this person for this purpose?"""
        return await self._send(self._decide(field, question))

    async def decide_batch(self, *, fields: Fields, **question: Unpack[Question]) -> BatchDecision:
        """Many fields of one person in one call ("*": every field of the vocabulary)."""
        return await self._send(self._decide_batch(fields, question))

    async def allowed_fields(
        self, *, fields: Fields, **question: Unpack[Question]
    ) -> frozenset[str]:
        """The fields Accord permits, out of those asked for, in one batch call."""
        return await self._send(self._allowed_fields(fields, question))

    async def why_not(self, *, field: str, **question: Unpack[Question]) -> tuple[Route, ...]:
        """Ask for one field (a decision, recorded as any is) and return the lawful routes
        to a permit if it is denied; () if it is permitted or no route exists."""
        return (await self._send(self._decide(field, question))).routes

    async def simulate(
        self,
        *,
        fields: Fields,
        agreement: Mapping[str, Any] | None = None,
        **question: Unpack[Question],
    ) -> BatchDecision:
        """Evaluate without recording, optionally with a draft agreement in force
        (needs a `manage` or `audit` key)."""
        return await self._send(self._simulate(fields, agreement, question))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.send(call.request)
            except httpx.TransportError as error:
                await asyncio.sleep(self._pause_after(error, attempt, call))
            else:
                return self._answer(call, response)
