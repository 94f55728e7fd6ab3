"""Casbin as the evaluator: enforce one request over its candidate lines.

pycasbin scans every line of a policy on each call, so a replica keeps one
enforcer per policy revision and hands it only the candidate lines that the
compiler's index picked for the request. Swapping the line list mutates the
enforcer, and pycasbin is not thread-safe (CPython issue 106905), hence the
lock: this is the mutable part of evaluation, so it lives in the runtime and
the pure engine is handed it.
"""

from __future__ import annotations

import functools
import threading
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


class _ParseOnceEnforcer(casbin.Enforcer):  # type: ignore[misc]
    """pycasbin parses the matcher (ast.parse) on every enforce; here it is parsed once.

    The parsed evaluator keeps the names of its last call, which is safe because
    CandidateEnforcer calls it under a lock. Relies on pycasbin 2.x's
    `_get_expression` hook, hence the pin below 3.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parsed: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        parsed = self._parsed.get(expr)
        if parsed is None:
            parsed = self._parsed[expr] = casbin.Enforcer._get_expression(expr, functions)
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
