"""Compile agreements and the person register into Casbin policy lines.

Agency groups and the purpose and field trees are expanded here, so the
Casbin matcher only compares names. An evaluation hands Casbin a few
candidate lines, not the whole policy: register lines are indexed by person;
agreements are indexed by (requester, holder), and the lines of those that
cover the asked field and purpose are made from each agreement's expanded
blocks. Within a candidate list lines are ordered by stage, and the model's
`priority` effect lets the first matching line decide:

  sealed > break-glass over an objection > objection > grant > break-glass

Consent-based grants are joined with each person's consents here, so a
consent becomes a person-specific grant line valid until the consent lapses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import IntEnum
from itertools import product

from app.policy.agreements import Agreement, Grant, Obligation
from app.policy.lines import PolicyLine
from app.policy.register import PersonRegister, Restriction, Scope
from app.policy.vocabulary import Vocabulary

ANY = "*"
FOREVER = "9999-12-31"


class Stage(IntEnum):
    """Order in which candidate lines are tried; the first match decides."""

    SEALED = 1
    BREAK_GLASS_OVER_OBJECTION = 2
    OBJECTION = 3
    GRANT = 4
    BREAK_GLASS = 5


STAGE_NAMES = {
    Stage.SEALED: "sealed",
    Stage.BREAK_GLASS_OVER_OBJECTION: "break-glass-over-objection",
    Stage.OBJECTION: "objection",
    Stage.GRANT: "grant",
    Stage.BREAK_GLASS: "break-glass",
}


@dataclass(frozen=True)
class LineSource:
    """What a policy line was compiled from, so a decision can name it."""

    stage: Stage
    agreement_id: str | None = None
    agreement_version: int | None = None
    obligations: tuple[Obligation, ...] = ()
    restriction_id: str | None = None
    consent_id: str | None = None
    overridden_objection_id: str | None = None  # break-glass over this objection

    @property
    def key(self) -> str:
        if self.restriction_id:
            return f"restriction:{self.restriction_id}"
        text = f"{self.agreement_id}@{self.agreement_version}:{STAGE_NAMES[self.stage]}"
        if self.consent_id:
            text += f"+consent:{self.consent_id}"
        if self.overridden_objection_id:
            text += f"+over:{self.overridden_objection_id}"
        return text


@dataclass
class CompiledPolicy:
    """The policy of one revision as Casbin lines and their indexes; never changed once built.

    What evaluating it changes (the Casbin enforcer, the memo of answers) a replica
    holds beside it (app/runtime/).
    """

    revision: int
    vocabulary: Vocabulary
    agreements: Mapping[str, Agreement]
    register: Mapping[str, PersonRegister]
    model_text: str  # the Casbin model the lines are for (policies/model.conf)
    person_lines: dict[str, list[PolicyLine]] = field(default_factory=lambda: defaultdict(list))
    sources: dict[str, LineSource] = field(default_factory=dict)
    agreements_by_pair: dict[tuple[str, str], list[Agreement]] = field(
        default_factory=lambda: defaultdict(list)
    )
    age_conditioned_pairs: set[tuple[str, str]] = field(default_factory=set)
    # Each active agreement's grant and break-glass blocks, by agreement id. The
    # lines a question needs are made from them when it is asked, so a reload
    # costs what the agreements cost, not what expanding their trees would.
    blocks: dict[str, list[_Block]] = field(default_factory=dict)
    # Every moment at which some line's validity starts or ends, sorted: between two
    # of them the same request gets the same answer, so a replica may memoise it.
    boundaries: list[str] = field(default_factory=list)

    def agreement_lines(
        self, requester: str, holder: str, field_name: str, purpose: str
    ) -> list[PolicyLine]:
        """Agreement lines between two agencies that cover one field and purpose."""
        field_lineage = self.vocabulary.fields.lineage[field_name]
        purpose_lineage = self.vocabulary.purposes.lineage[purpose]
        return [
            block.line(requester, holder, field_name, purpose)
            for agreement in self.agreements_by_pair.get((requester, holder), ())
            for block in self.blocks.get(agreement.id, ())
            # a block covers a name when it grants the name or one above it
            if not block.fields.isdisjoint(field_lineage)
            and not block.purposes.isdisjoint(purpose_lineage)
        ]

    def all_lines(self) -> list[PolicyLine]:
        lines = [line for group in self.person_lines.values() for line in group]
        for (requester, holder), agreements in self.agreements_by_pair.items():
            for agreement in agreements:
                for block in self.blocks.get(agreement.id, ()):
                    lines += [
                        block.line(requester, holder, field_name, purpose)
                        for field_name, purpose in product(
                            _descendants(block.fields, self.vocabulary.fields.descendants),
                            _descendants(block.purposes, self.vocabulary.purposes.descendants),
                        )
                    ]
        return sorted(lines)

    def candidates(
        self, *, requester: str, holder: str, person: str, field_name: str, purpose: str
    ) -> list[PolicyLine]:
        """The only lines that can match this request, in stage order."""
        lines = self.person_lines.get(person, []) + self.agreement_lines(
            requester, holder, field_name, purpose
        )
        lines.sort(key=_stage)
        return lines


@dataclass(frozen=True)
class _Block:
    """A grant or break-glass block of an active agreement."""

    fields: frozenset[str]  # as granted: each covers itself and its descendants
    purposes: frozenset[str]
    template: PolicyLine  # the block's line, its requester, holder, field and purpose blank

    def line(self, requester: str, holder: str, field_name: str, purpose: str) -> PolicyLine:
        t = self.template
        return PolicyLine(
            t.stage,
            requester,
            holder,
            t.person,
            field_name,
            purpose,
            t.min_age,
            t.max_age,
            t.emergency,
            t.valid_from,
            t.valid_until,
            t.source,
            t.eft,
        )


def _stage(line: PolicyLine) -> str:
    return line.stage


def _timestamp(moment: datetime | date | None) -> str:
    if moment is None:
        return FOREVER
    if isinstance(moment, datetime):
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat()


def _descendants(tree_names: Iterable[str], descendants: Mapping[str, frozenset[str]]) -> set[str]:
    return set().union(*(descendants[name] for name in tree_names))


def _within(names: set[str], limit: frozenset[str] | None) -> set[str]:
    return names if limit is None else names & limit


class _Builder:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.vocabulary = policy.vocabulary

    def source(self, source: LineSource) -> str:
        self.policy.sources.setdefault(source.key, source)
        return source.key

    def line(
        self,
        *,
        stage: Stage,
        requester: str,
        holder: str,
        person: str,
        field_name: str,
        purpose: str,
        min_age: int | None,
        max_age: int | None,
        emergency: str,
        valid_from: str,
        valid_until: str,
        source: str,
        effect: str,
    ) -> PolicyLine:
        return PolicyLine(
            stage=str(int(stage)),
            requester=requester,
            holder=holder,
            person=person,
            field=field_name,
            purpose=purpose,
            min_age="" if min_age is None else f"{min_age:03d}",
            max_age="" if max_age is None else f"{max_age:03d}",
            emergency=emergency,
            valid_from=valid_from,
            valid_until=valid_until,
            source=source,
            eft=effect,
        )

    def index(self, agreement: Agreement) -> None:
        """Note which pairs of agencies the agreement names (lines come per pair, later)."""
        requesters = self.vocabulary.expand_agencies(agreement.recipients)
        holders = self.vocabulary.expand_agencies(agreement.providers)
        for pair in product(requesters, holders):
            self.policy.agreements_by_pair[pair].append(agreement)
        self.policy.blocks[agreement.id] = self.blocks(agreement)
        if agreement.status == "active" and any(
            g.subject.min_age is not None or g.subject.max_age is not None for g in agreement.grants
        ):
            self.policy.age_conditioned_pairs.update(product(requesters, holders))

    def blocks(self, agreement: Agreement) -> list[_Block]:
        """The grant and break-glass blocks that an active agreement puts in force."""
        if agreement.status != "active":
            return []  # drafts, suspended and revoked agreements permit nothing
        window = (_timestamp(agreement.valid_from), _timestamp(agreement.valid_until))
        blocks: list[tuple[Stage, Iterable[str], Iterable[str], Grant | None]] = [
            (Stage.GRANT, grant.fields, grant.purposes, grant)
            for grant in agreement.grants
            if not grant.requires_consent  # compiled per person, joined with consents
        ]
        if agreement.break_glass:
            blocks.append(
                (
                    Stage.BREAK_GLASS,
                    agreement.break_glass.fields,
                    agreement.break_glass.purposes,
                    None,
                )
            )
        return [
            _Block(
                fields=frozenset(fields),
                purposes=frozenset(purposes),
                template=self.line(
                    stage=stage,
                    requester="",
                    holder="",
                    person=ANY,
                    field_name="",
                    purpose="",
                    min_age=grant.subject.min_age if grant else None,
                    max_age=grant.subject.max_age if grant else None,
                    emergency=ANY if grant else "yes",
                    valid_from=window[0],
                    valid_until=window[1],
                    source=self.source(
                        LineSource(
                            stage,
                            agreement.id,
                            agreement.version,
                            grant.obligations if grant else (),
                        )
                    ),
                    effect="allow",
                ),
            )
            for stage, fields, purposes, grant in blocks
        ]

    def restriction(self, restriction: Restriction) -> None:
        stage = Stage.SEALED if restriction.kind == "sealed" else Stage.OBJECTION
        source = self.source(LineSource(stage, restriction_id=restriction.id))
        scope = restriction.scope
        requesters = scope.requesters(self.vocabulary) or {ANY}
        fields = scope.field_names(self.vocabulary) or {ANY}
        purposes = scope.purpose_names(self.vocabulary) or {ANY}
        lines = self.policy.person_lines[restriction.person_id]
        for requester, field_name, purpose in product(requesters, fields, purposes):
            lines.append(
                self.line(
                    stage=stage,
                    requester=requester,
                    holder=ANY,
                    person=restriction.person_id,
                    field_name=field_name,
                    purpose=purpose,
                    min_age=None,
                    max_age=None,
                    emergency=ANY,
                    valid_from=_timestamp(restriction.recorded_at),
                    valid_until=_timestamp(restriction.until),
                    source=source,
                    effect="deny",
                )
            )
        if restriction.kind == "objection":
            self._break_glass_over(restriction)

    def _break_glass_over(self, objection: Restriction) -> None:
        """Emergency access that an agreement's break-glass block allows despite an objection."""
        for agreement in self.policy.agreements.values():
            if agreement.status != "active" or agreement.break_glass is None:
                continue
            self._person_lines(
                objection.person_id,
                agreement,
                agreement.break_glass.fields,
                agreement.break_glass.purposes,
                within=objection.scope,
                stage=Stage.BREAK_GLASS_OVER_OBJECTION,
                grant=None,
                window=(_timestamp(agreement.valid_from), _timestamp(agreement.valid_until)),
                consent_id=None,
                overridden_objection_id=objection.id,
            )

    def consents(self, person_id: str, register: PersonRegister) -> None:
        """Join each consent of a person with the consent-based grants it satisfies."""
        for consent in register.consents:
            for agreement in self.policy.agreements.values():
                if agreement.status != "active":
                    continue
                window = (
                    max(_timestamp(agreement.valid_from), _timestamp(consent.recorded_at)),
                    min(_timestamp(agreement.valid_until), _timestamp(consent.until)),
                )
                for grant in agreement.grants:
                    if grant.requires_consent:
                        self._person_lines(
                            person_id,
                            agreement,
                            grant.fields,
                            grant.purposes,
                            within=consent.scope,
                            stage=Stage.GRANT,
                            grant=grant,
                            window=window,
                            consent_id=consent.id,
                            overridden_objection_id=None,
                        )

    def _person_lines(
        self,
        person_id: str,
        agreement: Agreement,
        fields: Iterable[str],
        purposes: Iterable[str],
        *,
        within: Scope,
        stage: Stage,
        grant: Grant | None,
        window: tuple[str, str],
        consent_id: str | None,
        overridden_objection_id: str | None,
    ) -> None:
        """Lines for one person: an agreement's block narrowed to a register entry's scope."""
        source = self.source(
            LineSource(
                stage,
                agreement.id,
                agreement.version,
                grant.obligations if grant else (),
                consent_id=consent_id,
                overridden_objection_id=overridden_objection_id,
            )
        )
        requesters = _within(
            set(self.vocabulary.expand_agencies(agreement.recipients)),
            within.requesters(self.vocabulary),
        )
        lines = self.policy.person_lines[person_id]
        for requester, holder, field_name, purpose in product(
            requesters,
            self.vocabulary.expand_agencies(agreement.providers),
            _within(self._fields(fields), within.field_names(self.vocabulary)),
            _within(self._purposes(purposes), within.purpose_names(self.vocabulary)),
        ):
            lines.append(
                self.line(
                    stage=stage,
                    requester=requester,
                    holder=holder,
                    person=person_id,
                    field_name=field_name,
                    purpose=purpose,
                    min_age=grant.subject.min_age if grant else None,
                    max_age=grant.subject.max_age if grant else None,
                    emergency=ANY if grant else "yes",
                    valid_from=window[0],
                    valid_until=window[1],
                    source=source,
                    effect="allow",
                )
            )

    def _fields(self, names: Iterable[str]) -> set[str]:
        return _descendants(names, self.vocabulary.fields.descendants)

    def _purposes(self, names: Iterable[str]) -> set[str]:
        return _descendants(names, self.vocabulary.purposes.descendants)


def compile_policy(
    *,
    revision: int,
    vocabulary: Vocabulary,
    agreements: Iterable[Agreement],
    register: Mapping[str, PersonRegister],
    model_text: str,
) -> CompiledPolicy:
    """Agreements + register + vocabulary -> indexed Casbin policy lines for one revision."""
    by_id = {agreement.id: agreement for agreement in agreements}
    policy = CompiledPolicy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=by_id,
        register=dict(register),
        model_text=model_text,
    )
    build = _Builder(policy)
    for agreement in by_id.values():
        build.index(agreement)
    for person_id, entries in policy.register.items():
        for restriction in entries.restrictions:
            build.restriction(restriction)
        build.consents(person_id, entries)
    for lines in policy.person_lines.values():
        lines.sort(key=_stage)
    moments = {_timestamp(a.valid_from) for a in by_id.values()}
    moments |= {_timestamp(a.valid_until) for a in by_id.values()}
    for lines in policy.person_lines.values():
        moments |= {line.valid_from for line in lines} | {line.valid_until for line in lines}
    policy.boundaries = sorted(moments)
    return policy
