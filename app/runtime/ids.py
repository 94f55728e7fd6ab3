"""Random (version 4) UUIDs as text, drawn from the OS 256 at a time.

`uuid.uuid4()` makes one `os.urandom` call per id, and that call gives up the
GIL: under load the event loop then waits for the audit writer thread to hand
it back. Drawing many ids' worth of bytes at once keeps them just as random
while the loop keeps the GIL. Ids are made as text directly: a `uuid.UUID` and
its `str()` cost three times as much, on every decision.
"""

from __future__ import annotations

import os
import threading

_IDS_PER_DRAW = 256
_pool: list[str] = []
_lock = threading.Lock()


def _draw() -> list[str]:
    drawn = bytearray(os.urandom(16 * _IDS_PER_DRAW))
    ids = []
    for start in range(0, len(drawn), 16):
        drawn[start + 6] = drawn[start + 6] & 0x0F | 0x40  # version 4
        drawn[start + 8] = drawn[start + 8] & 0x3F | 0x80  # RFC 4122 variant
        h = drawn[start : start + 16].hex()
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def new_id() -> str:
    """A random UUID in its canonical text form (8-4-4-4-12 lowercase hex digits)."""
    with _lock:
        if not _pool:
            _pool.extend(_draw())
        return _pool.pop()
