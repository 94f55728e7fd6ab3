"""A plain, executable reading of DESIGN.md's decision semantics, for comparison with the engine.

Written from the text of DESIGN.md ("Decision semantics", "A category is all of
its fields", "An overridden objection is named", "Person facts"), not from the
engine: it imports neither `app.decision.engine` nor `app.policy.compiler` and
never calls Casbin. It uses only the data types (Agreement, the register's
entries, the vocabulary's agencies and ordered names) and decides everything
else itself: coverage by dotted names, groups, in-force windows, live register
entries, ages, consents, seals, objections, break-glass, categories and the
order of deny reasons. It is deliberately slow and obvious.

Where DESIGN.md leaves a choice open, the engine's observed behaviour decided it
and the place says so ("Ambiguity:"). Which agreement or consent a decision
names is not compared, so it is not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.policy.agreements import Agreement, Grant
from app.policy.register import Consent, PersonRegister, Restriction, Scope
from app.policy.vocabulary import Vocabulary

# Step 5's deny reasons, from the least to the furthest stage an agreement reached.
STAGES = (
    "no-agreement",
    "agreement-not-in-force",
    "purpose-not-covered",
    "field-not-covered",
    "subject-condition-not-met",
    "consent-required",
)


@dataclass(frozen=True)
class Ask:
    """May `requester` see `field` of `person`, held by `holder`, for `purpose`?"""

    requester: str
    holder: str
    person: str
    field: str
    purpose: str
    emergency: bool
    age: int | None
    info_unavailable: bool = False  # the person-information service did not answer


@dataclass(frozen=True)
class Answer:
    """The parts of a decision the reference vouches for."""

    permit: bool
    reason: str
    break_glass: bool = False
    overridden_objection_id: str | None = None
    restriction_id: str | None = None  # for a person-restriction deny


# --- names -------------------------------------------------------------------


def within(name: str, granted: str) -> bool:
    """A grant of `granted` covers `name`: itself or a name below it (dotted), never above."""
    return name == granted or name.startswith(granted + ".")


def named(name: str, granted: Iterable[str]) -> bool:
    return any(within(name, each) for each in granted)


def agency_named(vocabulary: Vocabulary, agency: str, names: Iterable[str]) -> bool:
    """`agency` is in `names` directly or through one of its groups."""
    listed = set(names)
    return agency in listed or any(group in listed for group in vocabulary.agencies[agency].groups)


def leaves(vocabulary: Vocabulary, field: str) -> list[str]:
    """The fields with nothing below them at or under `field`, in vocabulary order."""
    names = vocabulary.fields.names
    return [
        name
        for name in names
        if within(name, field) and not any(other.startswith(name + ".") for other in names)
    ]


# --- the register ------------------------------------------------------------


def live(entry: Restriction | Consent, now: datetime) -> bool:
    """An entry applies from when it was recorded until `until` (exclusive), its window
    read back as moments."""
    recorded, until = (_moment(text) for text in entry.window)
    return recorded <= now < until


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def scope_covers(vocabulary: Vocabulary, scope: Scope, ask: Ask) -> bool:
    """Each dimension left out (None) covers everything; a named one covers what is below it."""
    return (
        (scope.recipients is None or agency_named(vocabulary, ask.requester, scope.recipients))
        and (scope.fields is None or named(ask.field, scope.fields))
        and (scope.purposes is None or named(ask.purpose, scope.purposes))
    )


def restrictions(
    vocabulary: Vocabulary, register: PersonRegister, ask: Ask, kind: str, now: datetime
) -> list[Restriction]:
    # Ambiguity: with several live restrictions of one kind covering a request,
    # DESIGN.md does not say which is named; the engine names the first in the
    # person's register order, and so does this.
    return [
        entry
        for entry in register.restrictions
        if entry.kind == kind and live(entry, now) and scope_covers(vocabulary, entry.scope, ask)
    ]


def consented(vocabulary: Vocabulary, register: PersonRegister, ask: Ask, now: datetime) -> bool:
    """A live consent of the person for the purpose to the requester.

    Ambiguity: step 3 says "a live consent for X to A"; the person-facts section
    says an entry may also name fields. A consent that names fields counts only
    for those fields (its scope covers the request), as the engine does.
    """
    return any(
        live(consent, now) and scope_covers(vocabulary, consent.scope, ask)
        for consent in register.consents
    )


# --- agreements --------------------------------------------------------------


def in_force(agreement: Agreement, now: datetime) -> bool:
    """`active` and valid_from <= t < valid_until (dates: valid_until is exclusive)."""
    today = now.date()
    return agreement.status == "active" and agreement.valid_from <= today < agreement.valid_until


def between(vocabulary: Vocabulary, agreements: Sequence[Agreement], ask: Ask) -> list[Agreement]:
    """Agreements naming the holder among providers and the requester among recipients."""
    return [
        agreement
        for agreement in agreements
        if agency_named(vocabulary, ask.holder, agreement.providers)
        and agency_named(vocabulary, ask.requester, agreement.recipients)
    ]


def age_holds(grant: Grant, age: int | None) -> bool:
    """Bounds are inclusive; an unknown age fails any bound, and holds where none is set."""
    low, high = grant.subject.min_age, grant.subject.max_age
    if low is None and high is None:
        return True
    if age is None:
        return False
    return (low is None or age >= low) and (high is None or age <= high)


def grant_stage(
    vocabulary: Vocabulary, register: PersonRegister, grant: Grant, ask: Ask, now: datetime
) -> int:
    """How far one grant of an in-force agreement gets; len(STAGES) is a permit."""
    if not named(ask.purpose, grant.purposes):
        return STAGES.index("purpose-not-covered")
    if not named(ask.field, grant.fields):
        return STAGES.index("field-not-covered")
    if not age_holds(grant, ask.age):
        return STAGES.index("subject-condition-not-met")
    if grant.requires_consent and not consented(vocabulary, register, ask, now):
        return STAGES.index("consent-required")
    return len(STAGES)


def agreement_stage(
    vocabulary: Vocabulary, register: PersonRegister, agreement: Agreement, ask: Ask, now: datetime
) -> int:
    if not in_force(agreement, now):
        return STAGES.index("agreement-not-in-force")
    return max(grant_stage(vocabulary, register, grant, ask, now) for grant in agreement.grants)


def break_glass_open(
    vocabulary: Vocabulary, agreements: Sequence[Agreement], ask: Ask, now: datetime
) -> bool:
    """An in-force agreement between the parties has a break_glass block covering F and X."""
    return any(
        in_force(agreement, now)
        and agreement.break_glass is not None
        and named(ask.field, agreement.break_glass.fields)
        and named(ask.purpose, agreement.break_glass.purposes)
        for agreement in between(vocabulary, agreements, ask)
    )


# --- decisions ---------------------------------------------------------------


def decide_leaf(
    vocabulary: Vocabulary,
    agreements: Sequence[Agreement],
    register: PersonRegister,
    ask: Ask,
    now: datetime,
) -> Answer:
    """DESIGN.md's five steps for one leaf field, in order."""
    # 1. A live seal covering F (and A, X where it names them): nothing overrides it.
    seals = restrictions(vocabulary, register, ask, "sealed", now)
    if seals:
        return Answer(False, "person-restriction", restriction_id=seals[0].id)
    # 2. A live objection covering A, F and X, unless an emergency may break the glass.
    objections = restrictions(vocabulary, register, ask, "objection", now)
    if objections:
        if ask.emergency and break_glass_open(vocabulary, agreements, ask, now):
            return Answer(True, "break-glass", True, overridden_objection_id=objections[0].id)
        return Answer(False, "person-restriction", restriction_id=objections[0].id)
    # 3. An in-force agreement's grant, its subject conditions and any consent it needs.
    parties = between(vocabulary, agreements, ask)
    stages = [agreement_stage(vocabulary, register, a, ask, now) for a in parties]
    if len(STAGES) in stages:
        return Answer(True, "agreement")
    # 4. An emergency that step 3 does not permit, within a break_glass block.
    if ask.emergency and break_glass_open(vocabulary, agreements, ask, now):
        return Answer(True, "break-glass", True)
    # 5. Deny with the furthest stage any agreement between the parties reached.
    reason = STAGES[max(stages, default=0)]
    if reason == "subject-condition-not-met" and ask.info_unavailable:
        # Ambiguity: "Person facts" says an unreachable person-information service
        # gives a deny `person-info-unavailable`, never a permit. The engine reads
        # that as: the age is unknown (so no condition holds), and a deny that
        # turned on a subject condition says why; a grant without conditions
        # still permits, since it never needed the service. So does this.
        reason = "person-info-unavailable"
    return Answer(False, reason)


def decide(
    vocabulary: Vocabulary,
    agreements: Sequence[Agreement],
    registers: Mapping[str, PersonRegister],
    ask: Ask,
    now: datetime,
) -> Answer:
    """One field: a leaf by the five steps, a category as all of the leaves below it."""
    register = registers.get(ask.person, PersonRegister())
    below = leaves(vocabulary, ask.field)
    if below == [ask.field]:
        return decide_leaf(vocabulary, agreements, register, ask, now)
    answers = [
        decide_leaf(
            vocabulary,
            agreements,
            register,
            Ask(
                ask.requester,
                ask.holder,
                ask.person,
                leaf,
                ask.purpose,
                ask.emergency,
                ask.age,
                ask.info_unavailable,
            ),
            now,
        )
        for leaf in below
    ]
    denied = [answer for answer in answers if not answer.permit]
    if denied:
        # A seal or an objection on any leaf denies the category with that leaf's answer.
        restricted = [answer for answer in denied if answer.reason == "person-restriction"]
        return (restricted or denied)[0]
    if any(answer.break_glass for answer in answers):
        # Ambiguity: DESIGN.md says only that a break-glass permit over an objection
        # names it; for a category the engine names the first leaf's overridden
        # objection (any leaf's), and so does this.
        overridden = [a.overridden_objection_id for a in answers if a.overridden_objection_id]
        return Answer(True, "break-glass", True, overridden[0] if overridden else None)
    return Answer(True, "agreement")
