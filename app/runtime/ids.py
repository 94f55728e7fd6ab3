"""Ids: UUIDs version 7 (RFC 9562) as text, their random bits drawn from the OS 256 at a time.

A version 7 UUID starts with the Unix time in milliseconds, then 74 random bits. Every
decision's id goes into a unique index on the audit table; ids that grow with time are
added at the index's right edge instead of at a random page, which made a group commit's
inserts about 40 % cheaper (docs/performance.md). `uuid.uuid4()` makes one `os.urandom`
call per id, and that call gives up the GIL: under load the event loop then waits for
the audit writer thread to hand it back. Drawing many ids' random bits at once keeps them
just as random while the loop keeps the GIL. Ids are made as text directly: a `uuid.UUID`
and its `str()` cost three times as much, on every decision.
"""

from __future__ import annotations

import os
import threading
import time

_IDS_PER_DRAW = 256
_tails: list[str] = []  # "7xxx-Vxxx-xxxxxxxxxxxx": version, 74 random bits, variant
_lock = threading.Lock()


def _draw() -> list[str]:
    drawn = bytearray(os.urandom(10 * _IDS_PER_DRAW))
    tails = []
    for start in range(0, len(drawn), 10):
        drawn[start] = drawn[start] & 0x0F | 0x70  # version 7, then 12 random bits
        drawn[start + 2] = drawn[start + 2] & 0x3F | 0x80  # RFC 9562 variant, 62 random bits
        h = drawn[start : start + 10].hex()
        tails.append(f"{h[:4]}-{h[4:8]}-{h[8:]}")
    return tails


def new_id() -> str:
    """A new UUID version 7 in its canonical text form (8-4-4-4-12 lowercase hex digits)."""
    with _lock:
        if not _tails:
            _tails.extend(_draw())
        tail = _tails.pop()
    milliseconds = f"{time.time_ns() // 1_000_000:012x}"
    return f"{milliseconds[:8]}-{milliseconds[8:]}-{tail}"
