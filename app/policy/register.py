"""The person register: what a data controller recorded about one person.

Restrictions (`sealed` fields, `objection`s) and consents name any of
recipients, fields and purposes; a dimension left out (None) covers everything.
It is data, not compiled policy: a replica holds every person's entries
(app/runtime/register.py) and a decision is handed the asking person's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from app.policy.lines import casbin_time
from app.policy.vocabulary import Vocabulary

RestrictionKind = Literal["sealed", "objection"]


@dataclass(frozen=True, slots=True)
class Scope:
    """The recipients, fields and purposes an entry covers (None: all of them)."""

    recipients: tuple[str, ...] | None
    fields: tuple[str, ...] | None
    purposes: tuple[str, ...] | None

    def covers(self, vocabulary: Vocabulary, requester: str, field: str, purpose: str) -> bool:
        """Whether the entry applies to this requester, field and purpose: a name it lists
        covers itself and every name below it (a group: its agencies)."""
        return (
            (
                self.recipients is None
                or requester in self.recipients
                or any(group in self.recipients for group in vocabulary.agencies[requester].groups)
            )
            and (
                self.fields is None or not vocabulary.fields.lineage[field].isdisjoint(self.fields)
            )
            and (
                self.purposes is None
                or not vocabulary.purposes.lineage[purpose].isdisjoint(self.purposes)
            )
        )


Window = tuple[str, str]  # [recorded, until) as Casbin's time text (app/policy/lines.py)


def window_of(recorded_at: datetime, until: datetime | None) -> Window:
    """When an entry is in force: from when it was recorded until its end (None: never)."""
    return casbin_time(recorded_at), casbin_time(until)


# An entry holds its window as text, made once (every question about the person that the
# entry covers compares it), and a replica's view of a million entries is read as text.


@dataclass(frozen=True, slots=True)
class Restriction:
    id: str
    person_id: str
    kind: RestrictionKind
    scope: Scope
    window: Window


@dataclass(frozen=True, slots=True)
class Consent:
    id: str
    person_id: str
    scope: Scope
    window: Window


@dataclass(frozen=True, slots=True)
class PersonRegister:
    restrictions: tuple[Restriction, ...] = ()
    consents: tuple[Consent, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.restrictions or self.consents)


NO_ENTRIES = PersonRegister()
