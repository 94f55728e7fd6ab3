"""What the console shows beside the API's answers: the search form's filters, display
names from the vocabulary, the lawful basis of a person's permitted disclosures, and how
long a break-glass permit has waited."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import model_validator
from sqlalchemy.orm import Session

from app.agreements.service import version_history
from app.audit.router import AuditFilterParams, DisclosureGroupOut, SubjectAccessReport
from app.decision.reasons import ReasonCode
from app.policy.agreements import Agreement
from app.policy.vocabulary import Vocabulary

DAY = re.compile(r"\d{4}-\d\d-\d\d")


class ConsoleFilters(AuditFilterParams):
    """The API's search filters as the console's form sends them: a box left empty is no
    filter, and a day (the form's date picker) is that whole day in UTC, `from` its start
    and `to` its end."""

    @model_validator(mode="before")
    @classmethod
    def _from_form(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        values = {
            name: value.strip() if isinstance(value, str) else value
            for name, value in given.items()
        }
        values = {name: value for name, value in values.items() if value != ""}
        for name, days_after in (("from", 0), ("to", 1)):
            day = values.get(name)
            if isinstance(day, str) and DAY.fullmatch(day):
                with suppress(ValueError, OverflowError):  # not a day: the field says why
                    moment = date.fromisoformat(day) + timedelta(days=days_after)
                    values[name] = f"{moment.isoformat()}T00:00:00Z"
        return values


@dataclass(frozen=True)
class Names:
    """Display names from the vocabulary; a name it does not give (a group, a field with no
    title, a retired id) shows as the id."""

    vocabulary: Vocabulary

    def agency(self, agency_id: str) -> str:
        agency = self.vocabulary.agencies.get(agency_id)
        if agency is not None:
            return agency.name
        return f"{agency_id} (group)" if agency_id in self.vocabulary.groups else agency_id

    def purpose(self, purpose: str) -> str:
        return self.vocabulary.purposes.titles.get(purpose, purpose)

    def field(self, field: str) -> str:
        return self.vocabulary.fields.titles.get(field, field)


def filter_options(
    names: Names, agreements: Iterable[Agreement]
) -> dict[str, list[tuple[str, str]]]:
    """The search form's drop-downs: (the id it sends, what it shows), by filter."""
    vocabulary = names.vocabulary

    def tree(members: Iterable[str], title: Callable[[str], str]) -> list[tuple[str, str]]:
        return [(name, "\u2003" * name.count(".") + title(name)) for name in members]

    agencies = [(a.id, a.name) for a in sorted(vocabulary.agencies.values(), key=lambda a: a.name)]
    return {
        "requester": agencies,
        "holder": agencies,
        "field": tree(vocabulary.fields.names, names.field),
        "purpose": tree(vocabulary.purposes.names, names.purpose),
        "decision": [("permit", "permitted"), ("deny", "denied")],
        "reason": [(code.value, code.value) for code in ReasonCode],
        "agreement": [
            (a.id, f"{a.title} ({a.id})") for a in sorted(agreements, key=lambda a: a.id)
        ],
        "break_glass": [("true", "break-glass only"), ("false", "not break-glass")],
    }


@dataclass(frozen=True)
class LawfulBasis:
    """The agreement version behind some of a group's permits, and the articles they used."""

    agreement_id: str
    version: int
    title: str
    article6: str
    article9: str | None  # given where a special-category field was permitted
    article10: str | None  # given where a criminal-offence field was permitted
    legislation: list[str]
    fields: list[str]


def lawful_bases(
    session: Session, report: SubjectAccessReport, vocabulary: Vocabulary
) -> list[list[LawfulBasis]]:
    """For each group of the report, the stored agreement versions its permits were given
    under, each with Article 6 and, where its permitted fields need them, 9 and 10."""
    named = {
        item.agreement_id
        for group in report.groups
        for item in group.items
        if item.decision == "permit"
    }
    documents = {
        (row.agreement_id, row.version): row.document
        for agreement_id in sorted(name for name in named if name is not None)
        for row in version_history(session, agreement_id)
    }
    return [_group_bases(group, documents, vocabulary) for group in report.groups]


def _group_bases(
    group: DisclosureGroupOut,
    documents: dict[tuple[str, int], dict[str, Any]],
    vocabulary: Vocabulary,
) -> list[LawfulBasis]:
    permitted: dict[tuple[str, int], set[str]] = {}
    for item in group.items:
        if item.decision == "permit" and item.agreement_id and item.agreement_version:
            key = (item.agreement_id, item.agreement_version)
            permitted.setdefault(key, set()).add(item.field)
    bases = []
    for (agreement_id, version), fields in sorted(permitted.items()):
        document = documents[agreement_id, version]
        basis = document["lawful_basis"]
        classes = {
            kind for name in fields if name in vocabulary.fields
            for kind in vocabulary.classes_within(name)
        }  # fmt: skip
        bases.append(
            LawfulBasis(
                agreement_id=agreement_id,
                version=version,
                title=document["title"],
                article6=basis["article6"],
                article9=basis.get("article9") if "special-category" in classes else None,
                article10=basis.get("article10") if "criminal-offence" in classes else None,
                legislation=list(basis.get("legislation", [])),
                fields=sorted(fields),
            )
        )
    return bases


def waited(since: datetime, now: datetime) -> str:
    """How long from `since` to `now`, in its two largest units: `3 days 4 hours`."""
    minutes = max(int((now - since).total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{count} {unit}{'' if count == 1 else 's'}"
        for count, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if count
    ]
    return " ".join(parts[:2]) or "under a minute"
