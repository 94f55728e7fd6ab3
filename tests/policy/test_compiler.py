"""The compiler: groups and trees expanded, lines indexed and ordered, drafts compile to nothing."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from typing import Any

from app.decision.engine import PersonFacts, Question, evaluate
from app.decision.policy_tests import register_of
from app.policy.compiler import CompiledPolicy, Stage
from app.policy.lines import PolicyLine
from app.policy.register import NO_ENTRIES, PersonRegister
from app.policy.vocabulary import VocabularyError, parse_vocabulary
from app.runtime.snapshot import PolicySnapshot
from tests.scenario import scenario_policy, scenario_register

RECORDED = datetime(2026, 1, 1, tzinfo=UTC)


def test_groups_expand_to_every_member_agency() -> None:
    policy = scenario_policy()
    for holder in ("nhs.blackpool-hospitals", "nhs.lancashire-mental-health"):
        lines = _lines(
            policy,
            ("la.blackpool.childrens-services", holder, "health.mental", "safeguarding.children"),
        )
        assert [line.source for line in lines] == [
            "isa-blackpool-mash@1:grant",
            "isa-blackpool-mash@1:break-glass",
        ]


def test_a_granted_field_expands_to_itself_and_its_descendants_only() -> None:
    policy = scenario_policy()
    granted = {
        field
        for field in policy.vocabulary.fields.names
        if any(
            line.stage == str(int(Stage.GRANT))
            for line in _lines(
                policy,
                (
                    "la.blackpool.childrens-services",
                    "police.lancashire",
                    field,
                    "safeguarding.children",
                ),
            )
        )
    }
    assert {"identity", "identity.ethnicity", "criminal.convictions"} <= granted
    assert "criminal" not in granted and "criminal.intelligence" not in granted


def test_inactive_agreements_compile_to_no_lines_but_are_known_to_the_pair() -> None:
    policy = scenario_policy()
    sources = {line.source for line in policy.all_lines()}
    assert not any(source.startswith("isa-health-schools-draft") for source in sources)
    assert not any(source.startswith("isa-housing-police") for source in sources)
    pair = ("edu.blackpool-schools", "nhs.blackpool-hospitals")
    assert [a.id for a in policy.agreements_by_pair[pair]] == ["isa-health-schools-draft"]


def test_a_persons_entries_join_the_question_restrictions_first() -> None:
    policy = scenario_policy()
    asked = (
        "la.blackpool.adult-services",
        "nhs.lancashire-mental-health",
        "health.mental",
        "safeguarding.adults",
    )
    lines = _lines(policy, asked, person="P-201")
    stages = [int(line.stage) for line in lines]
    assert stages == sorted(stages)
    assert int(Stage.BREAK_GLASS_OVER_OBJECTION) in stages and int(Stage.OBJECTION) in stages
    assert all(line.person in ("P-201", "*") for line in lines)


def test_an_entry_that_does_not_cover_the_question_adds_no_line() -> None:
    policy = scenario_policy()
    # P-201 objects to health for adult safeguarding: not to their convictions
    asked = (
        "la.blackpool.adult-services",
        "police.lancashire",
        "criminal.convictions",
        "safeguarding.adults",
    )
    assert _lines(policy, asked, person="P-201") == _lines(policy, asked)


def test_consents_join_consent_based_grants_ending_with_the_consent() -> None:
    policy = scenario_policy()
    asked = ("la.blackpool.early-help", "edu.blackpool-schools", "education.attendance")
    lines = [
        line
        for line in _lines(policy, (*asked, "early-help"), person="P-302")
        if "consent:" in line.source
    ]
    assert lines and all(line.valid_until == "2020-06-01T00:00:00Z" for line in lines)


def test_break_glass_over_an_objection_is_in_force_only_while_the_objection_is() -> None:
    policy = scenario_policy()
    asked = (
        "la.blackpool.adult-services",
        "nhs.lancashire-mental-health",
        "health.mental",
        "safeguarding.adults",
    )
    lapsing = register_of(
        {
            "restrictions": [
                {
                    "id": "r-lapsing",
                    "person": "P-9",
                    "kind": "objection",
                    "until": "2026-06-01",
                }
            ]
        },
        RECORDED,
    )["P-9"]
    over = [
        line
        for line in _lines(policy, asked, person="P-9", entries=lapsing)
        if line.stage == str(int(Stage.BREAK_GLASS_OVER_OBJECTION))
    ]
    assert over
    assert all(line.valid_from == "2026-01-01T00:00:00Z" for line in over)
    assert all(line.valid_until == "2026-06-01T00:00:00Z" for line in over)


def test_break_glass_lines_are_candidates_of_emergency_questions_only() -> None:
    policy = scenario_policy()
    asked = (
        "la.blackpool.adult-services",
        "nhs.lancashire-mental-health",
        "health.mental",
        "safeguarding.adults",
    )
    routine = _lines(policy, asked, person="P-201", emergency=False)
    assert routine and all(line.emergency == "*" for line in routine)
    assert any(line.emergency == "yes" for line in _lines(policy, asked, person="P-201"))


def test_a_blanket_consent_adds_lines_only_for_the_grants_that_cover_the_question() -> None:
    """A consent with no dimensions touches every consent-based grant; a question about
    one field joins it only with the blocks between these two agencies that cover it."""
    policy = scenario_policy()
    blanket = register_of({"consents": [{"id": "c-all", "person": "P-27"}]}, RECORDED)["P-27"]
    asked = (
        "la.blackpool.early-help",
        "edu.blackpool-schools",
        "education.attendance",
        "early-help",
    )
    consent_lines = [
        line
        for line in _lines(policy, asked, person="P-27", entries=blanket)
        if "consent:c-all" in line.source
    ]
    assert len(consent_lines) == 1


def test_export_lists_every_line_once() -> None:
    lines = scenario_policy().all_lines()
    assert len(lines) == len(set(lines))


def _lines(
    policy: CompiledPolicy,
    asked: tuple[str, str, str, str],
    *,
    person: str = "P-0",
    entries: PersonRegister | None = None,
    emergency: bool = True,
) -> list[PolicyLine]:
    requester, holder, field, purpose = asked
    if entries is None:
        entries = scenario_register(RECORDED).get(person, NO_ENTRIES)
    lines, _ = policy.candidates(
        requester=requester,
        holder=holder,
        person=person,
        field_name=field,
        purpose=purpose,
        emergency=emergency,
        register=entries,
    )
    return lines


def test_vocabulary_refuses_an_orphan_and_an_unknown_class() -> None:
    base = {"agencies": [{"id": "a", "groups": []}], "purposes": [{"id": "p"}]}
    for fields, message in (
        ([{"id": "health.mental", "class": "personal"}], "no parent 'health'"),
        ([{"id": "health", "class": "secret"}], "unknown class"),
        ([{"id": "health"}], "needs a class"),
    ):
        try:
            parse_vocabulary({**base, "fields": fields})
        except VocabularyError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"accepted {fields}")


def test_a_replaced_policy_is_freed_without_the_cyclic_collector() -> None:
    """Replicas freeze each new policy out of garbage collection (collector_paused): a
    policy snapshot must hold no reference cycle, or every replaced one would stay in memory."""
    snapshot = PolicySnapshot.of(scenario_policy())
    for field in snapshot.policy.vocabulary.fields.names:  # fill the memo and the enforcer
        question = Question(
            "la.blackpool.childrens-services", "police.lancashire", "P-201", field, "safeguarding"
        )
        evaluate(
            snapshot.policy,
            question,
            PersonFacts("P-201", 12),
            datetime.now(UTC),
            enforcer=snapshot.enforcer,
            memo=snapshot.memo,
        )
    freed: list[weakref.ref[Any]] = [
        weakref.ref(part) for part in (snapshot.policy, snapshot.enforcer, snapshot.memo)
    ]
    gc.disable()
    try:
        del snapshot
        assert [ref() for ref in freed] == [None, None, None]
    finally:
        gc.enable()
