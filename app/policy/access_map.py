"""The access map (pure): which agency may see which classes of whose data, under which
agreement, for which purposes, as an information-governance board would draw it.

A flow is one agreement in force between one holder and one requester (agency groups
expanded, as the compiler indexes them): its grants, each with the data classes of the
fields it covers (a field's class and those under it), its purposes, whose data (the
subject's age bounds) and whether it needs the person's consent, and its break-glass
block, open in an emergency only. Filters keep the grants and break-glass blocks that
match them; a flow left with neither is not on the map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from app.policy.agreements import BreakGlass, Grant
from app.policy.compiler import CompiledPolicy
from app.policy.vocabulary import FIELD_CLASSES, FieldClass, Vocabulary


def whose(min_age: int | None, max_age: int | None) -> str:
    """Whose data, in words, from a grant's subject condition."""
    if min_age is None and max_age is None:
        return "anyone"
    if min_age is None:
        return "children (under 18)" if max_age == 17 else f"aged {max_age} and under"
    if max_age is None:
        return "adults (18 and over)" if min_age == 18 else f"aged {min_age} and over"
    return f"aged {min_age} to {max_age}"


def _ordered(classes: Iterable[FieldClass]) -> tuple[FieldClass, ...]:
    present = set(classes)
    return tuple(kind for kind in FIELD_CLASSES if kind in present)


@dataclass(frozen=True)
class Terms:
    """What a grant (or a break-glass block) covers, and for whom."""

    purposes: tuple[str, ...]
    fields: tuple[str, ...]  # as granted: each covers the fields under it
    classes: tuple[FieldClass, ...]  # of those fields and the fields under them
    requires_consent: bool = False
    min_age: int | None = None
    max_age: int | None = None

    @property
    def subjects(self) -> str:
        return whose(self.min_age, self.max_age)


@dataclass(frozen=True)
class Flow:
    """One agreement in force from one holder to one requester."""

    holder: str
    requester: str
    agreement_id: str
    agreement_version: int
    agreement_title: str
    grants: tuple[Terms, ...]
    break_glass: Terms | None  # open only in an emergency, with a justification

    @property
    def key(self) -> str:
        return f"{self.holder}--{self.requester}--{self.agreement_id}"

    @property
    def classes(self) -> tuple[FieldClass, ...]:
        """The classes its grants cover."""
        return _ordered(kind for grant in self.grants for kind in grant.classes)

    @property
    def emergency_only_classes(self) -> tuple[FieldClass, ...]:
        """The classes only its break-glass block covers."""
        covered = self.break_glass.classes if self.break_glass else ()
        return tuple(kind for kind in covered if kind not in self.classes)

    @property
    def purposes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for grant in self.grants for p in grant.purposes))

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(grant.subjects for grant in self.grants))

    @property
    def requires_consent(self) -> bool:
        return any(grant.requires_consent for grant in self.grants)


def _terms(vocabulary: Vocabulary, grant: Grant | BreakGlass) -> Terms:
    classes = _ordered(kind for name in grant.fields for kind in vocabulary.classes_within(name))
    if isinstance(grant, BreakGlass):
        return Terms(grant.purposes, grant.fields, classes)
    return Terms(
        grant.purposes,
        grant.fields,
        classes,
        requires_consent=grant.requires_consent,
        min_age=grant.subject.min_age,
        max_age=grant.subject.max_age,
    )


def access_map(
    policy: CompiledPolicy,
    today: date,
    *,
    agency: str | None = None,
    purpose: str | None = None,
    data_class: FieldClass | None = None,
) -> list[Flow]:
    """The flows of every agreement in force on `today`, by holder, requester and agreement.

    `agency` keeps the flows it holds or requests; `purpose` the grants for it, for a
    purpose under it or for one above it (which covers it); `data_class` the grants that
    cover a field of that class. An agency or purpose not in the vocabulary is refused."""
    vocabulary = policy.vocabulary
    vocabulary.refuse_unknown((("agency", agency, "agency"), ("purpose", purpose, "purpose")))
    related = (
        vocabulary.purposes.lineage[purpose] | vocabulary.purposes.descendants[purpose]
        if purpose is not None
        else None
    )

    def kept(terms: Terms) -> bool:
        return (related is None or not related.isdisjoint(terms.purposes)) and (
            data_class is None or data_class in terms.classes
        )

    terms: dict[str, tuple[tuple[Terms, ...], Terms | None]] = {}  # by agreement id
    for agreement in policy.agreements.values():
        if not agreement.in_force(today):
            continue
        grants = (_terms(vocabulary, grant) for grant in agreement.grants)
        emergency = _terms(vocabulary, agreement.break_glass) if agreement.break_glass else None
        terms[agreement.id] = (
            tuple(grant for grant in grants if kept(grant)),
            emergency if emergency and kept(emergency) else None,
        )
    flows = [
        Flow(
            holder=holder,
            requester=requester,
            agreement_id=agreement.id,
            agreement_version=agreement.version,
            agreement_title=agreement.title,
            grants=terms[agreement.id][0],
            break_glass=terms[agreement.id][1],
        )
        for (requester, holder), agreements in policy.agreements_by_pair.items()
        if agency is None or agency in (requester, holder)
        for agreement in agreements
        if agreement.id in terms and any(terms[agreement.id])
    ]
    return sorted(flows, key=lambda flow: (flow.holder, flow.requester, flow.agreement_id))
