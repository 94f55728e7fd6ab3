"""The compiler: groups and trees expanded, lines indexed and ordered, drafts compile to nothing."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from typing import Any

from app.decision.engine import PersonFacts, Question, evaluate
from app.policy.compiler import Stage
from app.policy.vocabulary import VocabularyError, parse_vocabulary
from tests.scenario import scenario_policy

RECORDED = datetime(2026, 1, 1, tzinfo=UTC)


def test_groups_expand_to_every_member_agency() -> None:
    policy = scenario_policy(RECORDED)
    for holder in ("nhs.blackpool-hospitals", "nhs.lancashire-mental-health"):
        lines = policy.agreement_lines(
            "la.blackpool.childrens-services", holder, "health.mental", "safeguarding.children"
        )
        assert [line[-2] for line in lines] == [
            "isa-blackpool-mash@1:grant",
            "isa-blackpool-mash@1:break-glass",
        ]


def test_a_granted_field_expands_to_itself_and_its_descendants_only() -> None:
    policy = scenario_policy(RECORDED)
    granted = {
        field
        for field in policy.vocabulary.fields.names
        if any(
            line[0] == str(int(Stage.GRANT))
            for line in policy.agreement_lines(
                "la.blackpool.childrens-services",
                "police.lancashire",
                field,
                "safeguarding.children",
            )
        )
    }
    assert {"identity", "identity.ethnicity", "criminal.convictions"} <= granted
    assert "criminal" not in granted and "criminal.intelligence" not in granted


def test_inactive_agreements_compile_to_no_lines_but_are_known_to_the_pair() -> None:
    policy = scenario_policy(RECORDED)
    sources = {line[-2] for line in policy.all_lines()}
    assert not any(source.startswith("isa-health-schools-draft") for source in sources)
    assert not any(source.startswith("isa-housing-police") for source in sources)
    pair = ("edu.blackpool-schools", "nhs.blackpool-hospitals")
    assert [a.id for a in policy.agreements_by_pair[pair]] == ["isa-health-schools-draft"]


def test_person_lines_are_ordered_restrictions_first() -> None:
    policy = scenario_policy(RECORDED)
    stages = [int(line[0]) for line in policy.person_lines["P-201"]]
    assert stages == sorted(stages)
    assert int(Stage.BREAK_GLASS_OVER_OBJECTION) in stages and int(Stage.OBJECTION) in stages


def test_consents_become_person_specific_grant_lines_ending_with_the_consent() -> None:
    policy = scenario_policy(RECORDED)
    lines = [line for line in policy.person_lines["P-302"] if "consent:" in line[-2]]
    assert lines and all(line[10] == "2020-06-01T00:00:00Z" for line in lines)


def test_export_lists_every_line_once() -> None:
    lines = scenario_policy(RECORDED).all_lines()
    assert len(lines) == len(set(lines))


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
    policy must hold no reference cycle, or every replaced one would stay in memory."""
    policy = scenario_policy(RECORDED)
    for field in policy.vocabulary.fields.names:  # fill the memo and the enforcer's state
        question = Question(
            "la.blackpool.childrens-services", "police.lancashire", "P-201", field, "safeguarding"
        )
        evaluate(policy, question, PersonFacts("P-201", 12), datetime.now(UTC))
    freed: list[weakref.ref[Any]] = [weakref.ref(policy), weakref.ref(policy.enforcer)]
    gc.disable()
    try:
        del policy
        assert [ref() for ref in freed] == [None, None]
    finally:
        gc.enable()
