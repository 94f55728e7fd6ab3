"""Casbin as the evaluator: enforce one request over its candidate lines.

pycasbin scans every line of a policy on each call, so a replica keeps one
enforcer per policy revision and hands it only the candidate lines that the
compiler's index picked for the request. Swapping the line list mutates the
enforcer, and pycasbin is not thread-safe (CPython issue 106905), hence the
lock: this is the mutable part of evaluation, so it lives in the runtime and
the pure engine is handed it.
"""

from __future__ import annotations

import ast
import functools
import operator
import threading
from collections.abc import Callable, Mapping
from typing import Any

import casbin
import casbin.util.util as casbin_util
from casbin.persist.adapter import Adapter

from app.policy.lines import POLICY_TOKENS, CasbinRequest, PolicyLine

# pycasbin searches the matcher text for its `eval` function with a regex on every
# enforce: about 11 µs for Accord's matcher, half of a decision not yet memoised.
# The answer depends on the text alone, so it is remembered per text.
casbin_util.has_eval = functools.lru_cache(maxsize=16)(casbin_util.has_eval)


class _NoPolicyAdapter(Adapter):  # type: ignore[misc]
    """Lines are given per call; there is nothing to load or save."""

    def load_policy(self, model: object) -> None:
        return None


Names = Mapping[str, Any]
Test = Callable[[Names], Any]

_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class CompiledMatcher:
    """A matcher of comparisons joined by and / or / not, as nested closures.

    pycasbin evaluates its matcher with simpleeval, walking the expression tree
    for every candidate line: about two thirds of a decision not yet memoised.
    The same tree, turned once into closures, gives the same values (Python's
    own `and`, `or`, `not` and comparisons, as simpleeval applies them) for a
    fraction of the cost. Only these node kinds are compiled, names are looked up
    as data and nothing is passed to `eval`; any other matcher is left to
    simpleeval (`of` answers None).
    """

    def __init__(self, test: Test) -> None:
        self._test = test

    @classmethod
    def of(cls, tree: ast.expr) -> CompiledMatcher | None:
        try:
            return cls(_compiled(tree))
        except _NotCompiled:
            return None

    def eval(self, names: Names) -> Any:  # pycasbin's expression interface
        return self._test(names)


class _NotCompiled(Exception):
    pass


def _compiled(node: ast.expr) -> Test:
    if isinstance(node, ast.BoolOp):
        return functools.reduce(
            _and if isinstance(node.op, ast.And) else _or, map(_compiled, node.values)
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        operand = _compiled(node.operand)
        return lambda names: not operand(names)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARISONS:
        compare = _COMPARISONS[type(node.ops[0])]
        left, right = _compiled(node.left), node.comparators[0]
        if isinstance(right, ast.Constant):  # the common case, one call fewer
            value = right.value
            return lambda names: compare(left(names), value)
        right_value = _compiled(right)
        return lambda names: compare(left(names), right_value(names))
    if isinstance(node, ast.Name):
        return operator.itemgetter(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
        value = node.value
        return lambda names: value
    raise _NotCompiled(ast.dump(node))


def _and(first: Test, second: Test) -> Test:
    return lambda names: first(names) and second(names)


def _or(first: Test, second: Test) -> Test:
    return lambda names: first(names) or second(names)


class _ParseOnceEnforcer(casbin.Enforcer):  # type: ignore[misc]
    """pycasbin parses the matcher (ast.parse) on every enforce; here it is parsed once,
    and compiled (CompiledMatcher) where it is made of comparisons alone.

    simpleeval's evaluator keeps the names of its last call, which is safe because
    CandidateEnforcer calls it under a lock. Relies on pycasbin 2.x's
    `_get_expression` hook, hence the pin below 3.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parsed: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        parsed = self._parsed.get(expr)
        if parsed is None:
            simple = casbin.Enforcer._get_expression(expr, functions)  # and, or, not as Python's
            compiled = CompiledMatcher.of(simple.ast_parsed_value)
            parsed = self._parsed[expr] = compiled or simple
        return parsed


class CandidateEnforcer:
    def __init__(self, model_text: str) -> None:
        self.model_text = model_text
        model = casbin.Enforcer.new_model(text=model_text)
        tokens = tuple(model["p"]["p"].tokens)
        expected = tuple(f"p_{name}" for name in POLICY_TOKENS)
        if tokens != expected:
            raise ValueError(f"model.conf policy_definition must be {POLICY_TOKENS}")
        if casbin_util.has_eval(model["m"]["m"].value):
            # Casbin's matcher `eval` would run policy-line text as an expression:
            # matching stays comparisons of names, with request values as data only.
            raise ValueError("model.conf matchers must not use Casbin's eval function")
        self._enforcer = _ParseOnceEnforcer(model, _NoPolicyAdapter())
        self._policy = self._enforcer.get_model()["p"]["p"]
        self._lock = threading.Lock()

    def enforce(
        self, lines: list[PolicyLine], request: CasbinRequest
    ) -> tuple[bool, PolicyLine | None]:
        """Casbin's answer and the line that decided it (None when no line matched)."""
        with self._lock:
            self._policy.policy = lines
            try:
                allowed, explain = self._enforcer.enforce_ex(
                    request.requester,
                    request.holder,
                    request.person,
                    request.field,
                    request.purpose,
                    request.age,
                    request.emergency,
                    request.now,
                )
            finally:
                self._policy.policy = []
        return bool(allowed), (PolicyLine(*explain) if explain else None)
