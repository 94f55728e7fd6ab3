"""Big work beside the event loop, in short C calls.

An import or a register view runs in a thread that shares the GIL with the
event loop. Python switches threads between bytecodes, never inside one C
call, so one call over a million objects (a dict's resize, a list freed) stops
every decision for its length. Measured on this project's machine: a dict
growing to a million entries stalled a 1 ms ticker up to 1.2 s; the 100,000
parsed rows of an import, freed at once, 40 ms.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SHARDS = 256  # a resize rehashes one shard: a 256th of the entries


class ShardedDict(Generic[K, V]):
    """A dict kept as SHARDS small dicts by key hash, so growing it never rehashes more
    than one small dict at once. Only what its users need of a dict."""

    __slots__ = ("_shards",)

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [{} for _ in range(SHARDS)]

    def _shard(self, key: K) -> dict[K, V]:
        return self._shards[hash(key) % SHARDS]

    def get(self, key: K, default: V) -> V:
        return self._shard(key).get(key, default)

    def setdefault(self, key: K, value: V) -> V:
        return self._shard(key).setdefault(key, value)

    def __setitem__(self, key: K, value: V) -> None:
        self._shard(key)[key] = value

    def pop(self, key: K) -> V | None:
        return self._shard(key).pop(key, None)

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def items(self) -> itertools.chain[tuple[K, V]]:
        return itertools.chain.from_iterable(shard.items() for shard in self._shards)


def free_in_slices(*containers: list[Any] | ShardedDict[Any, Any], size: int = 2000) -> None:
    """Empty large containers a slice at a time, so other threads run between slices."""
    for container in containers:
        if isinstance(container, ShardedDict):
            for shard in container._shards:
                shard.clear()  # a 256th of it
        else:
            while container:
                del container[-size:]
