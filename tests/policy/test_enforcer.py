"""The Casbin model Accord accepts (its own policy line shape, no `eval` in the matcher),
and its matcher compiled to the same answers as pycasbin's."""

from __future__ import annotations

import ast
import dataclasses
import random

import casbin
import pytest

from app.policy.lines import CasbinRequest, PolicyLine
from app.runtime.enforcer import CandidateEnforcer, CompiledMatcher
from tests.conftest import REPO

MODEL = (REPO / "policies" / "model.conf").read_text()


def test_a_matcher_using_eval_is_refused() -> None:
    matcher = next(line for line in MODEL.splitlines() if line.startswith("m = "))
    with_eval = MODEL.replace(matcher, matcher + " && eval(p.source)")
    with pytest.raises(ValueError, match="must not use Casbin's eval"):
        CandidateEnforcer(with_eval)


def _random_line(rng: random.Random, names: list[str]) -> PolicyLine:
    def name() -> str:
        return rng.choice([*names, "*"])

    def bound() -> str:
        return rng.choice(["", "010", "012", "016"])

    def moment() -> str:
        return rng.choice(["2026-01-01T00:00Z", "2026-06-01T00:00Z", "9999-12-31T23:59Z"])

    return PolicyLine(
        rng.choice("12345"),
        name(),
        name(),
        name(),
        name(),
        name(),
        bound(),
        bound(),
        rng.choice(["yes", "*"]),
        moment(),
        moment(),
        "s",
        rng.choice(["allow", "deny"]),
    )


def test_the_compiled_matcher_answers_as_pycasbin_does() -> None:
    """Accord's enforcer (its matcher compiled to closures) against stock pycasbin
    (simpleeval), over random lines and questions: the same answer and the same line."""
    rng = random.Random(13)
    names = ["a", "b", "c"]
    ours = CandidateEnforcer(MODEL)
    stock = casbin.Enforcer(casbin.Enforcer.new_model(text=MODEL))
    for _ in range(2_000):
        lines = [_random_line(rng, names) for _ in range(rng.randint(0, 4))]
        requester, holder, person, field, purpose = (rng.choice(names) for _ in range(5))
        request = CasbinRequest(
            requester,
            holder,
            person,
            field,
            purpose,
            age=rng.choice(["", "009", "012", "017"]),
            emergency=rng.choice(["yes", "no"]),
            now=rng.choice(["2025-12-31T00:00Z", "2026-03-01T00:00Z", "2026-06-01T00:00Z"]),
        )
        stock.get_model()["p"]["p"].policy = [list(line) for line in lines]
        allowed, explain = stock.enforce_ex(*dataclasses.astuple(request))
        assert ours.enforce(lines, request) == (allowed, PolicyLine(*explain) if explain else None)


def test_a_matcher_with_a_function_call_is_left_to_pycasbin() -> None:
    assert CompiledMatcher.of(ast.parse("keyMatch(r_field, p_field)", mode="eval").body) is None
    compiled = CompiledMatcher.of(ast.parse("a == 'x' and not b < c", mode="eval").body)
    assert compiled is not None
    assert compiled.eval({"a": "x", "b": "2", "c": "1"}) is True
    assert compiled.eval({"a": "x", "b": "1", "c": "2"}) is False
    assert compiled.eval({"a": "y", "b": "2", "c": "1"}) is False
