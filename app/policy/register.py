"""The person register: what a data controller recorded about one person.

Restrictions (`sealed` fields, `objection`s) and consents name any of
recipients, fields and purposes; a dimension left out (None) covers everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from app.policy.vocabulary import Vocabulary

RestrictionKind = Literal["sealed", "objection"]


@dataclass(frozen=True)
class Scope:
    """The recipients, fields and purposes an entry covers (None: all of them)."""

    recipients: tuple[str, ...] | None
    fields: tuple[str, ...] | None
    purposes: tuple[str, ...] | None

    def requesters(self, vocabulary: Vocabulary) -> frozenset[str] | None:
        return None if self.recipients is None else vocabulary.expand_agencies(self.recipients)

    def field_names(self, vocabulary: Vocabulary) -> frozenset[str] | None:
        if self.fields is None:
            return None
        return frozenset().union(*(vocabulary.fields.descendants[f] for f in self.fields))

    def purpose_names(self, vocabulary: Vocabulary) -> frozenset[str] | None:
        if self.purposes is None:
            return None
        return frozenset().union(*(vocabulary.purposes.descendants[p] for p in self.purposes))


@dataclass(frozen=True)
class Restriction:
    id: str
    person_id: str
    kind: RestrictionKind
    scope: Scope
    recorded_at: datetime
    until: datetime | None


@dataclass(frozen=True)
class Consent:
    id: str
    person_id: str
    scope: Scope
    recorded_at: datetime
    until: datetime | None


@dataclass(frozen=True)
class PersonRegister:
    restrictions: tuple[Restriction, ...] = ()
    consents: tuple[Consent, ...] = ()
