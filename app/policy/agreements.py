"""Information sharing agreements: the document model and its validation.

One loader for every source: YAML files, `accord agreements import` and the
API all call `parse_agreement`, which refuses a document with every problem
named by its place (`grants[0].fields[1]: unknown field 'health.dental'`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from app.errors import Unprocessable
from app.policy.vocabulary import Vocabulary

AgreementStatus = Literal["draft", "active", "suspended", "revoked"]
STATUSES: tuple[AgreementStatus, ...] = ("draft", "active", "suspended", "revoked")
SLUG = re.compile(r"^[a-z0-9][a-z0-9.-]{0,127}$")
MAX_NAMES = 500


@dataclass(frozen=True)
class Obligation:
    field: str
    mask: str


@dataclass(frozen=True)
class SubjectCondition:
    min_age: int | None = None
    max_age: int | None = None

    def holds(self, age: int | None) -> bool:
        """Whether a person of `age` meets the condition; an unknown age fails any bound."""
        if self.min_age is None and self.max_age is None:
            return True
        if age is None:
            return False
        if self.min_age is not None and age < self.min_age:
            return False
        return self.max_age is None or age <= self.max_age


@dataclass(frozen=True)
class Grant:
    purposes: tuple[str, ...]
    fields: tuple[str, ...]
    subject: SubjectCondition
    requires_consent: bool
    obligations: tuple[Obligation, ...]


@dataclass(frozen=True)
class BreakGlass:
    purposes: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Agreement:
    id: str
    version: int
    title: str
    status: AgreementStatus
    valid_from: date
    valid_until: date
    review_by: date | None
    providers: tuple[str, ...]
    recipients: tuple[str, ...]
    lawful_basis: Mapping[str, Any]
    grants: tuple[Grant, ...]
    break_glass: BreakGlass | None

    def in_force(self, today: date) -> bool:
        return self.status == "active" and self.valid_from <= today < self.valid_until


@dataclass(frozen=True)
class Problem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class AgreementInvalid(Unprocessable):
    """An agreement document was refused; `problems` names each bad place."""

    title = "Invalid agreement"

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))

    def invalid_params(self) -> list[tuple[str, str]]:
        return [(p.location or "document", p.message) for p in self.problems]


class _Reader:
    """Collects problems while reading one document, so all are reported at once."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.problems: list[Problem] = []

    def fail(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))

    def text(self, doc: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > 500:
            self.fail(key, "must be a non-empty string of at most 500 characters")
            return None
        return value

    def day(self, doc: Mapping[str, Any], key: str, *, required: bool = True) -> date | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(key, f"must be a date (YYYY-MM-DD), got {value!r}")
        return None

    def names(self, value: Any, location: str, kind: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(location, f"must be a non-empty list of {kind}")
            return ()
        if len(value) > MAX_NAMES:
            self.fail(location, f"lists more than {MAX_NAMES} {kind}")
            return ()
        known = {
            "agencies": self.vocabulary.is_agency_or_group,
            "purposes": self.vocabulary.purposes.__contains__,
            "fields": self.vocabulary.fields.__contains__,
        }[kind]
        good: list[str] = []
        for index, name in enumerate(value):
            if not isinstance(name, str) or not known(name):
                singular = {"agencies": "agency or group", "purposes": "purpose"}.get(kind, "field")
                self.fail(f"{location}[{index}]", f"unknown {singular} '{name}'")
            else:
                good.append(name)
        return tuple(good)

    def age(self, subject: Mapping[str, Any], key: str, location: str) -> int | None:
        value = subject.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 150:
            self.fail(f"{location}.{key}", "must be a whole number of years from 0 to 150")
            return None
        return value


def parse_agreement(
    document: Any, vocabulary: Vocabulary, *, version: int = 1, source: str = "agreement"
) -> Agreement:
    """Validate an agreement document against the vocabulary; raise AgreementInvalid."""
    if not isinstance(document, Mapping):
        raise AgreementInvalid(source, [Problem("", "an agreement must be a mapping")])
    read = _Reader(vocabulary)
    known_keys = {
        "id",
        "title",
        "status",
        "valid_from",
        "valid_until",
        "review_by",
        "providers",
        "recipients",
        "lawful_basis",
        "grants",
        "break_glass",
    }
    for key in document:
        if key not in known_keys:
            read.fail(str(key), "is not a field of an agreement")

    agreement_id = read.text(document, "id")
    if agreement_id is not None and not SLUG.match(agreement_id):
        read.fail("id", "must be a slug: lower-case letters, digits, '.' and '-'")
    title = read.text(document, "title")
    status = document.get("status", "draft")
    if status not in STATUSES:
        read.fail("status", f"must be one of {', '.join(STATUSES)}")
    valid_from = read.day(document, "valid_from")
    valid_until = read.day(document, "valid_until")
    if valid_from and valid_until and valid_until <= valid_from:
        read.fail("valid_until", f"{valid_until} is not after valid_from {valid_from}")
    review_by = read.day(document, "review_by", required=False)
    providers = read.names(document.get("providers"), "providers", "agencies")
    recipients = read.names(document.get("recipients"), "recipients", "agencies")

    lawful_basis = document.get("lawful_basis")
    if not isinstance(lawful_basis, Mapping) or not lawful_basis.get("article6"):
        read.fail("lawful_basis.article6", "is required")
        lawful_basis = lawful_basis if isinstance(lawful_basis, Mapping) else {}

    grants: list[Grant] = []
    raw_grants = document.get("grants")
    if not isinstance(raw_grants, list) or not raw_grants:
        read.fail("grants", "must be a non-empty list")
        raw_grants = []
    for index, raw in enumerate(raw_grants):
        where = f"grants[{index}]"
        if not isinstance(raw, Mapping):
            read.fail(where, "must be a mapping")
            continue
        fields = read.names(raw.get("fields"), f"{where}.fields", "fields")
        purposes = read.names(raw.get("purposes"), f"{where}.purposes", "purposes")
        subject_doc = raw.get("subject") or {}
        if not isinstance(subject_doc, Mapping):
            read.fail(f"{where}.subject", "must be a mapping of min_age and max_age")
            subject_doc = {}
        for key in subject_doc:
            if key not in ("min_age", "max_age"):
                read.fail(f"{where}.subject.{key}", "is not a subject condition")
        subject = SubjectCondition(
            min_age=read.age(subject_doc, "min_age", f"{where}.subject"),
            max_age=read.age(subject_doc, "max_age", f"{where}.subject"),
        )
        requires_consent = raw.get("requires_consent", False)
        if not isinstance(requires_consent, bool):
            read.fail(f"{where}.requires_consent", "must be true or false")
            requires_consent = True
        obligations: list[Obligation] = []
        for o_index, raw_obligation in enumerate(raw.get("obligations") or []):
            o_where = f"{where}.obligations[{o_index}]"
            if not isinstance(raw_obligation, Mapping) or not isinstance(
                raw_obligation.get("mask"), str
            ):
                read.fail(o_where, "must name a field and a mask")
                continue
            named = read.names([raw_obligation.get("field")], f"{o_where}.field", "fields")
            if named:
                obligations.append(Obligation(field=named[0], mask=raw_obligation["mask"]))
        grants.append(Grant(purposes, fields, subject, requires_consent, tuple(obligations)))

    break_glass: BreakGlass | None = None
    raw_bg = document.get("break_glass")
    if raw_bg is not None:
        if not isinstance(raw_bg, Mapping):
            read.fail("break_glass", "must be a mapping of purposes and fields")
        else:
            break_glass = BreakGlass(
                purposes=read.names(raw_bg.get("purposes"), "break_glass.purposes", "purposes"),
                fields=read.names(raw_bg.get("fields"), "break_glass.fields", "fields"),
            )

    shared_fields = [(f"grants[{i}].fields", g.fields) for i, g in enumerate(grants)]
    if break_glass:
        shared_fields.append(("break_glass.fields", break_glass.fields))
    for location, names in shared_fields:
        for name in names:
            classes = vocabulary.classes_within(name)
            if "special-category" in classes and not lawful_basis.get("article9"):
                read.fail(
                    location,
                    f"'{name}' holds special-category data: lawful_basis.article9 is required",
                )
            if "criminal-offence" in classes and not lawful_basis.get("article10"):
                read.fail(
                    location,
                    f"'{name}' holds criminal-offence data: lawful_basis.article10 is required",
                )

    if read.problems:
        raise AgreementInvalid(source, read.problems)
    assert agreement_id and title and valid_from and valid_until  # checked above
    return Agreement(
        id=agreement_id,
        version=version,
        title=title,
        status=status,
        valid_from=valid_from,
        valid_until=valid_until,
        review_by=review_by,
        providers=providers,
        recipients=recipients,
        lawful_basis=dict(lawful_basis),
        grants=tuple(grants),
        break_glass=break_glass,
    )
