"""The Casbin model Accord accepts: its own policy line shape, and no `eval` in the matcher."""

from __future__ import annotations

import pytest

from app.runtime.enforcer import CandidateEnforcer
from tests.conftest import REPO

MODEL = (REPO / "policies" / "model.conf").read_text()


def test_a_matcher_using_eval_is_refused() -> None:
    matcher = next(line for line in MODEL.splitlines() if line.startswith("m = "))
    with_eval = MODEL.replace(matcher, matcher + " && eval(p.source)")
    with pytest.raises(ValueError, match="must not use Casbin's eval"):
        CandidateEnforcer(with_eval)
