"""Casbin's policy lines and requests as Accord builds them (pure data).

The field order is `policies/model.conf`'s policy and request definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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
