"""A policy revision as a replica holds it: the compiled policy and what evaluating it mutates.

The compiled policy never changes once built; the Casbin enforcer (its line
list is swapped per call, behind a lock) and the memo of answers do, so they
are kept here beside it, one of each per revision.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.policy.compiler import CompiledPolicy
from app.runtime.enforcer import CandidateEnforcer
from app.runtime.memo import DecisionMemo


@dataclass(frozen=True)
class PolicySnapshot:
    policy: CompiledPolicy
    enforcer: CandidateEnforcer
    memo: DecisionMemo | None  # None: answers are not remembered (a one-off simulation)

    @classmethod
    def of(cls, policy: CompiledPolicy, *, memoise: bool = True) -> PolicySnapshot:
        """The enforcer checks the Casbin model first: a bad model.conf is refused here."""
        return cls(
            policy=policy,
            enforcer=CandidateEnforcer(policy.model_text),
            memo=DecisionMemo(policy.boundaries) if memoise else None,
        )
