"""Decision and request ids: UUIDs version 7, unique, in time order across milliseconds."""

from __future__ import annotations

import time
import uuid

from app.runtime.ids import new_id


def test_ids_are_version_7_uuids_unique_and_ordered_by_their_millisecond() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]  # more than one draw of random bits
    time.sleep(0.002)
    later = new_id()
    parsed = [uuid.UUID(text) for text in ids]
    assert len(set(ids)) == len(ids)
    assert all(
        u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == t
        for u, t in zip(parsed, ids, strict=True)
    )
    stamps = [u.int >> 80 for u in parsed]  # the first 48 bits: Unix time in milliseconds
    assert before_ms <= stamps[0] and stamps == sorted(stamps)
    assert uuid.UUID(later).int >> 80 > stamps[-1]
    assert later > ids[-1]  # as text too: the audit index sees them in time order
