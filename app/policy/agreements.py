"""Information sharing agreements: what the compiler reads, and the validation that makes it.

One loader for every source: YAML files, `accord agreements import` and the
API all call `parse_agreement`, which refuses a document with every problem
named by its place (`grants[0].fields[1]: unknown field 'health.dental'`).
The document's shape is the pydantic model `AgreementDocument`
(app/policy/document.py); its errors are turned into the same named places,
then the vocabulary and the rules across fields are checked here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from app.errors import Unprocessable
from app.policy.document import (
    MAX_NAMES,
    MAX_TEXT,
    STATUSES,
    AgreementDocument,
    AgreementStatus,
    BreakGlassDocument,
    Day,
    GrantDocument,
    LawfulBasis,
    ObligationDocument,
    SubjectConditions,
)
from app.policy.vocabulary import Vocabulary
from app.types import UNPAIRED_SURROGATE

__all__ = ["STATUSES", "Agreement", "AgreementInvalid", "AgreementStatus", "parse_agreement"]


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


# -- The shape: pydantic's errors as named places --------------------------------

TEXT = f"must be a non-empty string of at most {MAX_TEXT} characters"
NAME_LISTS = {
    "providers": "agencies",
    "recipients": "agencies",
    "purposes": "purposes",
    "fields": "fields",
}
SINGULAR = {"agencies": "agency or group", "purposes": "purpose", "fields": "field"}
ONE = {"agencies": "an agency or group", "purposes": "a purpose", "fields": "a field"}
NAME_FORM = "a name is lower-case letters, digits, '.', '_' and '-'"
OWNERS: dict[str | None, tuple[str, type[Any]]] = {
    None: ("an agreement", AgreementDocument),
    "grants": ("a grant", GrantDocument),
    "subject": ("a subject condition", SubjectConditions),
    "obligations": ("an obligation", ObligationDocument),
    "lawful_basis": ("lawful_basis", LawfulBasis),
    "break_glass": ("break_glass", BreakGlassDocument),
}
PART_MESSAGES = {  # a place that is not a mapping or list of the kind it must be
    "grants": "must be a non-empty list",
    "subject": "must be a mapping of min_age and max_age",
    "min_age": "must be a whole number of years from 0 to 150",
    "max_age": "must be a whole number of years from 0 to 150",
    "requires_consent": "must be true or false",
    "obligations": "must be a list of mappings, each naming a field and a mask",
    "break_glass": "must be a mapping of purposes and fields",
    "lawful_basis": "must be a mapping naming article6 (and article9, article10 where needed)",
    "status": f"must be one of {', '.join(STATUSES)}",
    "legislation": "must be a list of texts",
}
ITEM_MESSAGES = {"grants": "must be a mapping", "obligations": "must name a field and a mask"}
DATES = ("valid_from", "valid_until", "review_by")
_DAY: TypeAdapter[date] = TypeAdapter(Day)


def _place(loc: Sequence[int | str]) -> str:
    """`grants[0].fields[1]`: a pydantic location as the document's own path."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(loc: Sequence[int | str]) -> str | None:
    """The name of the last key in a location: `grants` for `grants[0]`."""
    return next((part for part in reversed(loc) if isinstance(part, str)), None)


def _shape_message(error: ErrorDetails) -> str:
    loc, kind, value = error["loc"], error["type"], error.get("input")
    item = bool(loc) and isinstance(loc[-1], int)
    key = _key(loc)
    if kind == "string_unicode":  # a text (or a key) with an unpaired surrogate
        return UNPAIRED_SURROGATE
    if kind == "value_error" and isinstance(value, str):  # a text that cannot be stored
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        owner, model = OWNERS.get(_key(loc[:-1]), OWNERS[None])
        known = ", ".join(model.model_fields)
        if model is SubjectConditions:
            return f"is not a subject condition (known: {known})"
        return f"is not a field of {owner} (known: {known})"
    if kind == "missing" or (value is None and not item):
        return "is required"
    if key in NAME_LISTS:
        names = NAME_LISTS[key]
        if item and not isinstance(value, str):
            return f"must be the name of {ONE[names]}, got {_shown(value)}"
        if item:
            return f"unknown {SINGULAR[names]} {_shown(value)}: {NAME_FORM}"
        if kind == "too_long":
            return f"lists more than {MAX_NAMES} {names}"
        return f"must be a non-empty list of {names}"
    if key == "field" and not isinstance(value, str):
        return f"must be the name of a field, got {_shown(value)}"
    if key == "field":
        return f"unknown field {_shown(value)}: {NAME_FORM}"
    if key == "id":
        if kind == "string_type":
            return TEXT
        return "must be a slug: lower-case letters, digits, '.' and '-'"
    if key in DATES:
        return f"must be a date (YYYY-MM-DD), got {_shown(value)}"
    if key in ("title", "mask", "article6", "article9", "article10") or (
        key == "legislation" and item
    ):
        return TEXT
    if kind == "too_long" and key in ("grants", "obligations", "legislation"):
        return f"lists more than {MAX_NAMES} {key}"
    if item and key in ITEM_MESSAGES:
        return ITEM_MESSAGES[key]
    if key in PART_MESSAGES:
        return PART_MESSAGES[key]
    return str(error["msg"]).removeprefix("Value error, ")


def _shape_problems(error: ValidationError) -> list[Problem]:
    problems: dict[str, Problem] = {}
    for detail in error.errors(include_url=False):
        place = _place(detail["loc"])
        problems.setdefault(place, Problem(place, _shape_message(detail)))  # one per place
    return list(problems.values())


# -- The meaning: names in the vocabulary, rules across fields ------------------


class _Meaning:
    """Checks the names and rules of a document, skipping places whose shape was refused,
    so a document with a bad key still has every unknown name reported."""

    def __init__(self, vocabulary: Vocabulary, refused: set[str]) -> None:
        self.vocabulary = vocabulary
        self.refused = refused
        self.problems: list[Problem] = []

    def names(self, value: Any, location: str, kind: str) -> list[str]:
        """The names of a list that the vocabulary knows; each other one is a problem."""
        if not isinstance(value, list) or location in self.refused:
            return []
        known: Callable[[str], bool] = {
            "agencies": self.vocabulary.is_agency_or_group,
            "purposes": self.vocabulary.purposes.__contains__,
            "fields": self.vocabulary.fields.__contains__,
        }[kind]
        good: list[str] = []
        for index, name in enumerate(value):
            where = f"{location}[{index}]"
            if not isinstance(name, str) or where in self.refused:
                continue
            if known(name):
                good.append(name)
            else:
                self.problems.append(Problem(where, f"unknown {SINGULAR[kind]} '{name}'"))
        return good

    def day(self, document: Mapping[str, Any], key: str) -> date | None:
        if key in self.refused or document.get(key) is None:
            return None
        try:
            return _DAY.validate_python(document[key])
        except ValidationError:
            return None

    def check(self, document: Mapping[str, Any]) -> None:
        valid_from, valid_until = (
            self.day(document, "valid_from"),
            self.day(document, "valid_until"),
        )
        if valid_from and valid_until and valid_until <= valid_from:
            self.problems.append(
                Problem("valid_until", f"{valid_until} is not after valid_from {valid_from}")
            )
        self.names(document.get("providers"), "providers", "agencies")
        self.names(document.get("recipients"), "recipients", "agencies")
        shared_fields: list[tuple[str, list[str]]] = []
        grants = document.get("grants")
        for index, grant in enumerate(grants if isinstance(grants, list) else []):
            where = f"grants[{index}]"
            if not isinstance(grant, Mapping):
                continue
            fields = self.names(grant.get("fields"), f"{where}.fields", "fields")
            shared_fields.append((f"{where}.fields", fields))
            self.names(grant.get("purposes"), f"{where}.purposes", "purposes")
            obligations = grant.get("obligations")
            for o_index, obligation in enumerate(
                obligations if isinstance(obligations, list) else []
            ):
                field = obligation.get("field") if isinstance(obligation, Mapping) else None
                o_where = f"{where}.obligations[{o_index}].field"
                known = not isinstance(field, str) or field in self.vocabulary.fields
                if not known and o_where not in self.refused:
                    self.problems.append(Problem(o_where, f"unknown field '{field}'"))
        break_glass = document.get("break_glass")
        if isinstance(break_glass, Mapping):
            fields = self.names(break_glass.get("fields"), "break_glass.fields", "fields")
            shared_fields.append(("break_glass.fields", fields))
            self.names(break_glass.get("purposes"), "break_glass.purposes", "purposes")
        basis = document.get("lawful_basis")
        self.lawful_basis(basis if isinstance(basis, Mapping) else {}, shared_fields)

    def lawful_basis(
        self, basis: Mapping[str, Any], shared_fields: list[tuple[str, list[str]]]
    ) -> None:
        """Special-category fields need article9, criminal-offence fields article10."""
        for location, names in shared_fields:
            for name in names:
                classes = self.vocabulary.classes_within(name)
                if "special-category" in classes and not basis.get("article9"):
                    self.problems.append(
                        Problem(
                            location,
                            f"'{name}' holds special-category data: "
                            "lawful_basis.article9 is required",
                        )
                    )
                if "criminal-offence" in classes and not basis.get("article10"):
                    self.problems.append(
                        Problem(
                            location,
                            f"'{name}' holds criminal-offence data: "
                            "lawful_basis.article10 is required",
                        )
                    )


def _grant(grant: GrantDocument) -> Grant:
    subject = grant.subject or SubjectConditions()
    return Grant(
        purposes=tuple(grant.purposes),
        fields=tuple(grant.fields),
        subject=SubjectCondition(min_age=subject.min_age, max_age=subject.max_age),
        requires_consent=grant.requires_consent,
        obligations=tuple(Obligation(o.field, o.mask) for o in grant.obligations or ()),
    )


def parse_agreement(
    document: Any, vocabulary: Vocabulary, *, version: int = 1, source: str = "agreement"
) -> Agreement:
    """Validate an agreement document against the vocabulary; raise AgreementInvalid.

    The shape first (`AgreementDocument`), then the names and the rules across
    fields, so every problem of the document is reported at once."""
    if not isinstance(document, Mapping):
        raise AgreementInvalid(source, [Problem("", "an agreement must be a mapping")])
    shaped: AgreementDocument | None = None
    problems: list[Problem] = []
    try:
        shaped = AgreementDocument.model_validate(document)
    except ValidationError as exc:
        problems = _shape_problems(exc)
    meaning = _Meaning(vocabulary, {problem.location for problem in problems})
    meaning.check(document)
    problems += meaning.problems
    if problems:
        raise AgreementInvalid(source, problems)
    assert shaped is not None  # no problem means the shape held
    break_glass = shaped.break_glass
    return Agreement(
        id=shaped.id,
        version=version,
        title=shaped.title,
        status=shaped.status,
        valid_from=shaped.valid_from,
        valid_until=shaped.valid_until,
        review_by=shaped.review_by,
        providers=tuple(shaped.providers),
        recipients=tuple(shaped.recipients),
        lawful_basis=dict(document["lawful_basis"]),
        grants=tuple(_grant(grant) for grant in shaped.grants),
        break_glass=(
            BreakGlass(purposes=tuple(break_glass.purposes), fields=tuple(break_glass.fields))
            if break_glass
            else None
        ),
    )
