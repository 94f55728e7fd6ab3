"""Casbin's policy lines and requests as Accord builds them (pure data).

The field order is `policies/model.conf`'s policy and request definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

FOREVER = "9999-12-31"  # the end of a window with no end; orders after every moment


def casbin_time(moment: datetime | date | None) -> str:
    """A moment as lines and requests compare it: ISO-8601 UTC text, which orders as time
    does (a date: its midnight; None: FOREVER)."""
    if moment is None:
        return FOREVER
    if isinstance(moment, datetime):
        if moment.utcoffset():
            moment = moment.astimezone(UTC)
        return moment.isoformat(timespec="seconds")[:19] + "Z"  # strftime: 10x the time
    return moment.isoformat()


class PolicyLine(NamedTuple):
    """One Casbin policy line, in model.conf's policy_definition order."""

    stage: str  # "1" sealed .. "5" break-glass: the first matching line decides
    requester: str  # an agency id, or "*"
    holder: str
    person: str
    field: str
    purpose: str
    min_age: str  # zero-padded ("018"), or "" for no bound
    max_age: str
    emergency: str  # "yes", or "*" for any request
    valid_from: str  # ISO-8601 UTC, inclusive
    valid_until: str  # exclusive
    source: str  # the key of the LineSource it was compiled from
    eft: str  # "allow" | "deny"


POLICY_TOKENS = PolicyLine._fields


@dataclass(frozen=True)
class CasbinRequest:
    requester: str
    holder: str
    person: str
    field: str
    purpose: str
    age: str
    emergency: str
    now: str
