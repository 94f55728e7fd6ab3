"""The cyclic garbage collector around work that makes many long-lived objects."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a policy compiles, the register loads or a
    register file is imported; then the survivors (the new policy, the register
    view) are frozen out of later collections.

    That work allocates enough long-lived objects to set off full collections,
    each a 100-300 ms pause of every thread at 10,000 agreements, over 400 ms
    during an import of a million register entries (decisions included);
    paused, the work is also faster. Frozen, a million register entries are not
    walked by every later full collection. A replaced policy has
    no reference cycles, so reference counting frees it, frozen or not
    (tests/policy/test_compiler.py); what a freeze keeps from the cyclic
    collector for good is the cyclic garbage of that moment, once per reload.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()
