"""Answers remembered for one policy revision, while no validity boundary passes.

Between two consecutive boundaries of a compiled policy (a moment at which
some agreement's or register entry's validity starts or ends) the same
question gets the same answer, so a replica may remember it. The memo is
emptied when the time crosses a boundary, or when it grows past its limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

MEMO_LIMIT = 200_000


class DecisionMemo:
    def __init__(self, boundaries: Sequence[str], limit: int = MEMO_LIMIT) -> None:
        self._boundaries = boundaries
        self._limit = limit
        self._answers: dict[tuple[object, ...], Any] = {}
        self._window = ("", "")

    def at(self, moment: str) -> dict[tuple[object, ...], Any]:
        """The answers valid at `moment` (an ISO-8601 UTC second)."""
        start, end = self._window
        if not start <= moment < end or len(self._answers) > self._limit:
            after = bisect.bisect_right(self._boundaries, moment)
            self._answers = {}
            self._window = (
                self._boundaries[after - 1] if after else "",
                self._boundaries[after] if after < len(self._boundaries) else "~",
            )
        return self._answers
