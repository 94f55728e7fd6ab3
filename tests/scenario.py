"""The shared scenario as pure objects, for tests of the compiler and engine alone."""

from __future__ import annotations

import functools
from datetime import datetime

from app.decision.engine import Decision, PersonFacts, Question, evaluate
from app.decision.policy_tests import register_of
from app.policy.agreements import Agreement, parse_agreement
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.files import agreement_documents, load_vocabulary
from app.policy.register import PersonRegister
from app.policy.vocabulary import Vocabulary
from app.runtime.enforcer import CandidateEnforcer
from tests.conftest import REPO, SCENARIO, load_yaml

MODEL_TEXT = (REPO / "policies" / "model.conf").read_text()


def scenario_vocabulary() -> Vocabulary:
    return load_vocabulary(SCENARIO / "vocabulary.yaml")


def scenario_agreements(vocabulary: Vocabulary) -> list[Agreement]:
    return [
        parse_agreement(document, vocabulary, source=source)
        for source, document in agreement_documents(SCENARIO / "agreements")
    ]


def scenario_policy(revision: int = 1) -> CompiledPolicy:
    vocabulary = scenario_vocabulary()
    return compile_policy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=scenario_agreements(vocabulary),
        model_text=MODEL_TEXT,
    )


def scenario_register(recorded_at: datetime) -> dict[str, PersonRegister]:
    """The scenario's register, as if every entry was recorded at `recorded_at`."""
    return register_of(load_yaml(SCENARIO / "cases.yaml")["register"], recorded_at)


@functools.cache
def _enforcer(model_text: str) -> CandidateEnforcer:
    return CandidateEnforcer(model_text)


def evaluate_on(
    policy: CompiledPolicy, question: Question, facts: PersonFacts, now: datetime
) -> Decision:
    """The engine on one question with a Casbin enforcer for the policy's model, no memo."""
    return evaluate(policy, question, facts, now, enforcer=_enforcer(policy.model_text))
