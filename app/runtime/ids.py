"""Random (version 4) UUIDs, drawn from the OS 256 at a time.

`uuid.uuid4()` makes one `os.urandom` call per id, and that call gives up the
GIL: under load the event loop then waits for the audit writer thread to hand
it back. Drawing many ids' worth of bytes at once keeps them just as random
while the loop keeps the GIL.
"""

from __future__ import annotations

import os
import threading
import uuid

_IDS_PER_DRAW = 256
_pool: list[bytes] = []
_lock = threading.Lock()


def new_uuid() -> uuid.UUID:
    with _lock:
        if not _pool:
            drawn = os.urandom(16 * _IDS_PER_DRAW)
            _pool.extend(drawn[i : i + 16] for i in range(0, len(drawn), 16))
        return uuid.UUID(bytes=_pool.pop(), version=4)
