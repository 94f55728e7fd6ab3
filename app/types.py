"""Constrained types shared by every API schema: names, ids and bounded strings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

MAX_BATCH_FIELDS = 1000  # the most fields one batch request may list


# pydantic refuses an unpaired surrogate itself (type `string_unicode`, "unable to parse raw
# data as a unicode string"); the problem handlers give this reason instead.
UNPAIRED_SURROGATE = "must not contain an unpaired surrogate"


def _storable(text: str) -> str:
    """Text that every backend stores and the audit hash covers as given: no NUL (which
    PostgreSQL's text refuses) and no unpaired surrogate (which UTF-8 cannot hold)."""
    if "\x00" in text:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(UNPAIRED_SURROGATE) from None
    return text


Storable = AfterValidator(_storable)  # every free text given to the service passes it


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _rfc3339(value: Any) -> Any:
    """A date-time given as text must be RFC 3339 (not a number of seconds, not a date)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, as 2026-12-01T09:30:00Z")
    return value


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is outside the years 1 to 9999 in UTC") from exc


VocabularyName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$", max_length=128)
]
PersonId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", max_length=128)
]
EntryId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", max_length=128)
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128), Storable]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=2000), Storable]
# A person's name or staff id, as they give it: not blank.
PersonName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), Storable
]
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
