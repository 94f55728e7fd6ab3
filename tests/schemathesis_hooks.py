"""Schemathesis hooks for tests/test_fuzz.py (given in SCHEMATHESIS_HOOKS): hostile text
in generated request bodies.

Every generated JSON body also comes in variants with one of its strings, or one of its keys,
carrying a NUL or an unpaired surrogate (JSON sends one as a `\\udXXX` escape). Schemathesis's
own string generation cannot do the surrogates: its schema validator and its query encoding
need UTF-8, which has no form for them; injected after generation, they reach the service.
No schema forbids them, so the service must refuse them with a 422 naming the place.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import schemathesis
from hypothesis import strategies as st

HOSTILE = ("\x00", "\ud800", "\udfff", "\udc00\ud800")  # NUL; lone high, lone low, reversed pair
Path = tuple[str | int, ...]


def _places(value: Any, path: Path = ()) -> Iterator[tuple[Path, bool]]:
    """Every string (path, False) and every key (path to it, True) inside a JSON value. A
    body that is itself text is a file (the register import's CSV or NDJSON), sent as UTF-8."""
    if isinstance(value, str) and path:
        yield path, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), True
            yield from _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _places(item, (*path, index))


def _spoil(body: Any, place: tuple[Path, bool], bad: str, at_start: bool) -> Any:
    path, is_key = place
    spoiled = copy.deepcopy(body)
    parent = spoiled
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if is_key:
        assert isinstance(last, str)
        new_key = bad + last if at_start else last + bad
        parent[new_key] = parent.pop(last)
    else:
        text = parent[last]
        parent[last] = bad + text if at_start else text + bad
    return spoiled


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    places = list(_places(body))
    if not places:
        return st.just(body)
    spoiled = st.builds(
        _spoil, st.just(body), st.sampled_from(places), st.sampled_from(HOSTILE), st.booleans()
    )
    return st.one_of(st.just(body), spoiled)
