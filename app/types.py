"""Constrained types shared by every API schema: names, ids and bounded strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints

MAX_BATCH_FIELDS = 1000  # the most fields one batch request may list


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
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
