"""Person facts for a decision: the attributes a grant's conditions need.

Today they come from the request's `subject.attributes`; the register's
restrictions and consents are compiled into the policy itself.
"""

from __future__ import annotations

from datetime import date

from app.decision.engine import PersonFacts
from app.decision.schemas import Subject


def _age_on(birth_date: date, today: date) -> int:
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


def person_facts(subject: Subject, today: date) -> PersonFacts:
    attributes = subject.attributes
    age = attributes.age
    if age is None and attributes.birth_date is not None:
        age = _age_on(attributes.birth_date, today)
        if age < 0:
            age = None  # a birth date in the future tells us nothing
    return PersonFacts(person_id=subject.id, age=age)
