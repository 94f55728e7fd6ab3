"""Compile agreements into Casbin policy lines; join a person's register entries at question time.

Agency groups and the purpose and field trees are expanded here, so the
Casbin matcher only compares names. An evaluation hands Casbin a few
candidate lines, not the whole policy: agreements are indexed by
(requester, holder), and the lines of those that cover the asked field and
purpose are made from each agreement's blocks when the question is asked.

The person register is data, not compiled policy (DESIGN.md, Person facts):
its entries reach a replica through a change feed without recompiling
anything, and a question about a person joins only that person's entries
that cover this requester, field and purpose with the blocks that cover the
question: a restriction becomes a deny line, an objection also opens the
break-glass blocks over it, a consent joins the consent-based grants. So the
lines per question do not grow with the register or with an entry's breadth.

Within a candidate list lines are ordered by stage, and the model's
`priority` effect lets the first matching line decide:

  sealed > break-glass over an objection > objection > grant > break-glass
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import product

from app.policy.agreements import Agreement, Grant, Obligation
from app.policy.lines import PolicyLine, casbin_time
from app.policy.register import Consent, PersonRegister, Restriction
from app.policy.vocabulary import Vocabulary

ANY = "*"


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
    """What a policy line was made from, so a decision can name it."""

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


@dataclass(frozen=True)
class _Block:
    """A grant or break-glass block of an active agreement."""

    fields: frozenset[str]  # as granted: each covers itself and its descendants
    purposes: frozenset[str]
    source: LineSource
    requires_consent: bool  # a grant that permits only with the person's live consent
    template: PolicyLine  # the block's line, its requester, holder, field and purpose blank

    def line(
        self,
        requester: str,
        holder: str,
        field_name: str,
        purpose: str,
        *,
        joined: tuple[LineSource, str, tuple[str, str]] | None = None,
    ) -> PolicyLine:
        """The block's line for one question; `joined` makes it a person's line instead:
        (its source, the person, the window it shares with their register entry)."""
        t = self.template
        if joined is None:
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
        source, person, (entry_from, entry_until) = joined
        return PolicyLine(
            str(int(source.stage)),
            requester,
            holder,
            person,
            field_name,
            purpose,
            t.min_age,
            t.max_age,
            t.emergency,
            max(t.valid_from, entry_from),
            min(t.valid_until, entry_until),
            source.key,
            t.eft,
        )


@dataclass
class CompiledPolicy:
    """The agreements of one revision as Casbin lines and their indexes; never changed once
    built. What evaluating it changes (the Casbin enforcer, the memo of answers) a replica
    holds beside it (app/runtime/)."""

    revision: int
    vocabulary: Vocabulary
    agreements: Mapping[str, Agreement]
    model_text: str  # the Casbin model the lines are for (policies/model.conf)
    sources: dict[str, LineSource] = field(default_factory=dict)
    agreements_by_pair: dict[tuple[str, str], list[Agreement]] = field(
        default_factory=lambda: defaultdict(list)
    )
    age_conditioned_pairs: set[tuple[str, str]] = field(default_factory=set)
    # Each active agreement's grant and break-glass blocks, by agreement id. The
    # lines a question needs are made from them when it is asked, so a reload
    # costs what the agreements cost, not what expanding their trees would.
    blocks: dict[str, list[_Block]] = field(default_factory=dict)
    # Every moment at which some agreement's validity starts or ends, sorted: between
    # two of them the same question (of a person with no register entry) gets the same
    # answer, so a replica may memoise it.
    boundaries: list[str] = field(default_factory=list)

    def _covering_blocks(
        self, requester: str, holder: str, field_name: str, purpose: str, emergency: bool
    ) -> list[_Block]:
        field_lineage = self.vocabulary.fields.lineage[field_name]
        purpose_lineage = self.vocabulary.purposes.lineage[purpose]
        return [
            block
            for agreement in self.agreements_by_pair.get((requester, holder), ())
            for block in self.blocks.get(agreement.id, ())
            # a block covers a name when it grants the name or one above it; a
            # break-glass block's lines match emergency requests only
            if not block.fields.isdisjoint(field_lineage)
            and not block.purposes.isdisjoint(purpose_lineage)
            and (emergency or block.source.stage != Stage.BREAK_GLASS)
        ]

    def candidates(
        self,
        *,
        requester: str,
        holder: str,
        person: str,
        field_name: str,
        purpose: str,
        emergency: bool,
        register: PersonRegister,
    ) -> tuple[list[PolicyLine], dict[str, LineSource]]:
        """The only lines that can match this question, in stage order, and the sources
        of the lines made from the person's register entries."""
        blocks = self._covering_blocks(requester, holder, field_name, purpose, emergency)
        lines = [
            block.line(requester, holder, field_name, purpose)
            for block in blocks
            if not block.requires_consent
        ]
        entry_sources: dict[str, LineSource] = {}
        if register.restrictions or register.consents:
            asked = (requester, field_name, purpose)
            for restriction in register.restrictions:
                if restriction.scope.covers(self.vocabulary, *asked):
                    lines += _restriction_lines(
                        restriction, blocks, holder, *asked, sources=entry_sources
                    )
            for consent in register.consents:
                if consent.scope.covers(self.vocabulary, *asked):
                    lines += _consent_lines(consent, blocks, holder, *asked, sources=entry_sources)
        lines.sort(key=_stage)
        return lines, entry_sources

    def all_lines(self) -> list[PolicyLine]:
        """Every agreement line, expanded over the trees (`accord policy export`)."""
        lines: list[PolicyLine] = []
        for (requester, holder), agreements in self.agreements_by_pair.items():
            for agreement in agreements:
                for block in self.blocks.get(agreement.id, ()):
                    if block.requires_consent:
                        continue  # joined with a person's consent when asked
                    lines += [
                        block.line(requester, holder, field_name, purpose)
                        for field_name, purpose in product(
                            _descendants(block.fields, self.vocabulary.fields.descendants),
                            _descendants(block.purposes, self.vocabulary.purposes.descendants),
                        )
                    ]
        return sorted(lines)


def _restriction_lines(
    restriction: Restriction,
    blocks: list[_Block],
    holder: str,
    requester: str,
    field_name: str,
    purpose: str,
    *,
    sources: dict[str, LineSource],
) -> list[PolicyLine]:
    """A restriction's deny line; for an objection, the break-glass blocks over it too,
    each in force only while both the agreement and the objection are."""
    window = restriction.window
    stage = Stage.SEALED if restriction.kind == "sealed" else Stage.OBJECTION
    source = LineSource(stage, restriction_id=restriction.id)
    sources[source.key] = source
    lines = [
        PolicyLine(
            stage=str(int(stage)),
            requester=requester,
            holder=ANY,
            person=restriction.person_id,
            field=field_name,
            purpose=purpose,
            min_age="",
            max_age="",
            emergency=ANY,
            valid_from=window[0],
            valid_until=window[1],
            source=source.key,
            eft="deny",
        )
    ]
    if restriction.kind == "objection":
        for block in blocks:
            if block.source.stage != Stage.BREAK_GLASS:
                continue
            over = LineSource(
                Stage.BREAK_GLASS_OVER_OBJECTION,
                block.source.agreement_id,
                block.source.agreement_version,
                overridden_objection_id=restriction.id,
            )
            sources[over.key] = over
            lines.append(
                block.line(
                    requester,
                    holder,
                    field_name,
                    purpose,
                    joined=(over, restriction.person_id, window),
                )
            )
    return lines


def _consent_lines(
    consent: Consent,
    blocks: list[_Block],
    holder: str,
    requester: str,
    field_name: str,
    purpose: str,
    *,
    sources: dict[str, LineSource],
) -> list[PolicyLine]:
    """The consent-based grants a consent satisfies, in force while both are."""
    window = consent.window
    lines = []
    for block in blocks:
        if not block.requires_consent:
            continue
        source = LineSource(
            Stage.GRANT,
            block.source.agreement_id,
            block.source.agreement_version,
            block.source.obligations,
            consent_id=consent.id,
        )
        sources[source.key] = source
        lines.append(
            block.line(
                requester, holder, field_name, purpose, joined=(source, consent.person_id, window)
            )
        )
    return lines


def _stage(line: PolicyLine) -> str:
    return line.stage


def _descendants(tree_names: Iterable[str], descendants: Mapping[str, frozenset[str]]) -> set[str]:
    return set().union(*(descendants[name] for name in tree_names))


class _Builder:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.vocabulary = policy.vocabulary

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
        window = (casbin_time(agreement.valid_from), casbin_time(agreement.valid_until))
        blocks: list[tuple[Stage, Iterable[str], Iterable[str], Grant | None]] = [
            (Stage.GRANT, grant.fields, grant.purposes, grant) for grant in agreement.grants
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
        made = []
        for stage, fields, purposes, grant in blocks:
            source = LineSource(
                stage, agreement.id, agreement.version, grant.obligations if grant else ()
            )
            self.policy.sources.setdefault(source.key, source)
            made.append(
                _Block(
                    fields=frozenset(fields),
                    purposes=frozenset(purposes),
                    source=source,
                    requires_consent=bool(grant and grant.requires_consent),
                    template=PolicyLine(
                        stage=str(int(stage)),
                        requester="",
                        holder="",
                        person=ANY,
                        field="",
                        purpose="",
                        min_age=_age(grant.subject.min_age if grant else None),
                        max_age=_age(grant.subject.max_age if grant else None),
                        emergency=ANY if grant else "yes",
                        valid_from=window[0],
                        valid_until=window[1],
                        source=source.key,
                        eft="allow",
                    ),
                )
            )
        return made


def _age(bound: int | None) -> str:
    return "" if bound is None else f"{bound:03d}"


def compile_policy(
    *,
    revision: int,
    vocabulary: Vocabulary,
    agreements: Iterable[Agreement],
    model_text: str,
) -> CompiledPolicy:
    """Agreements + vocabulary -> indexed Casbin policy blocks for one revision."""
    by_id = {agreement.id: agreement for agreement in agreements}
    policy = CompiledPolicy(
        revision=revision, vocabulary=vocabulary, agreements=by_id, model_text=model_text
    )
    build = _Builder(policy)
    for agreement in by_id.values():
        build.index(agreement)
    moments = {casbin_time(a.valid_from) for a in by_id.values()}
    moments |= {casbin_time(a.valid_until) for a in by_id.values()}
    policy.boundaries = sorted(moments)
    return policy


def with_agreement(policy: CompiledPolicy, agreement: Agreement) -> CompiledPolicy:
    """`policy` recompiled with `agreement` in place of its namesake (or added): a draft
    simulated, a change assessed."""
    others = [a for a in policy.agreements.values() if a.id != agreement.id]
    return compile_policy(
        revision=policy.revision,
        vocabulary=policy.vocabulary,
        agreements=[*others, agreement],
        model_text=policy.model_text,
    )
