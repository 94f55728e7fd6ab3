"""Person facts for a decision: the attributes a grant's conditions need.

They come from the request's `subject.attributes`; when those lack an age that
an agreement between the parties conditions on, and a person-information
service is configured, they are fetched over HTTP (timeout, bounded cache,
pooled connections). A failed fetch is remembered in the facts, so that a
condition it left unchecked denies with `person-info-unavailable`: never a permit.
The register's restrictions and consents are compiled into the policy itself.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Self
from urllib.parse import quote

import httpx
import structlog
from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.decision.engine import PersonFacts
from app.decision.schemas import Subject, plausible_birth_date
from app.policy.register import PersonRegister
from app.runtime.metrics import PERSON_INFO_CALLS

log = structlog.get_logger(__name__)


class PersonInfo(BaseModel):
    """What Accord reads from the person-information service's JSON answer.

    Strict: `true` is not an age and "12" is not a number; an answer with
    neither an age nor a plausible birth date is no answer.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    age: int | None = Field(default=None, ge=0, le=150)
    birth_date: date | None = None

    @field_validator("birth_date")
    @classmethod
    def _plausible(cls, value: date | None) -> date | None:
        return plausible_birth_date(value)

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.age is None and self.birth_date is None:
            raise ValueError("the answer has neither age nor birth_date")
        return self


class PersonInfoUnavailable(Exception):
    """The service could not be reached, answered an error, or answered nonsense."""


class PersonInfoService:
    def __init__(
        self, url_template: str, *, timeout_seconds: float, cache_seconds: float, cache_size: int
    ) -> None:
        self._url_template = url_template
        self._timeout = timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )
        self._cache: TTLCache[str, PersonInfo] = TTLCache(
            maxsize=cache_size, ttl=max(cache_seconds, 0.001)
        )

    async def lookup(self, person_id: str) -> PersonInfo:
        cached = self._cache.get(person_id)
        if cached is not None:
            PERSON_INFO_CALLS.labels(result="cached").inc()
            return cached
        url = self._url_template.replace("{person_id}", quote(person_id, safe=""))
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            info = PersonInfo.model_validate_json(response.content)
        except (TimeoutError, httpx.HTTPError, ValidationError) as exc:
            log.warning("person information unavailable", error_type=type(exc).__name__)
            PERSON_INFO_CALLS.labels(result="failed").inc()
            raise PersonInfoUnavailable(type(exc).__name__) from exc
        PERSON_INFO_CALLS.labels(result="fetched").inc()
        self._cache[person_id] = info
        return info

    async def aclose(self) -> None:
        await self._client.aclose()


def _age_on(birth_date: date, today: date) -> int | None:
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    age = today.year - birth_date.year - before_birthday
    return age if age >= 0 else None  # a birth date in the future tells us nothing


def _age(age: int | None, birth_date: date | None, today: date) -> int | None:
    if age is not None:
        return age
    return None if birth_date is None else _age_on(birth_date, today)


def given_facts(subject: Subject, today: date, register: PersonRegister) -> PersonFacts:
    """The facts the request itself carries, and the person's register entries."""
    attributes = subject.attributes
    return PersonFacts(
        subject.id, _age(attributes.age, attributes.birth_date, today), register=register
    )


async def person_facts(
    subject: Subject,
    today: date,
    *,
    register: PersonRegister,
    needs_age: bool,
    person_info: PersonInfoService | None,
) -> PersonFacts:
    given = given_facts(subject, today, register)
    if given.age is not None or not needs_age or person_info is None:
        return given
    try:
        info = await person_info.lookup(subject.id)
    except PersonInfoUnavailable:
        return PersonFacts(subject.id, age=None, info_unavailable=True, register=register)
    return PersonFacts(subject.id, age=_age(info.age, info.birth_date, today), register=register)
