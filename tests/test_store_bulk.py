"""Bulk inserts (COPY on PostgreSQL) store what an INSERT stores, and fail as one does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.register.service import ENTRIES
from app.store.bulk import insert_rows


def _row(entry_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": entry_id,
        "person_id": "P-1",
        "kind": "objection",
        "recipients": None,
        "fields": ["contact.address", "health"],
        "purposes": [],
        "reason": 'a reason with "quotes", a tab\t, a backslash \\ and a newline\n',
        "until": datetime(2031, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
        "recorded_by": "test",
        "recorded_at": datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC),
        "removed_by": None,
        "removed_at": None,
        **changes,
    }


def test_bulk_rows_read_back_as_inserted_rows(engine: Engine) -> None:
    with Session(engine) as session:
        insert_rows(session, ENTRIES, [_row("bulk"), _row("bulk-2", until=None, fields=None)])
        session.execute(
            insert(ENTRIES), [_row("inserted"), _row("inserted-2", until=None, fields=None)]
        )
        session.commit()
        stored = {row.id: row._asdict() for row in session.execute(select(ENTRIES))}
    for bulk, inserted in (("bulk", "inserted"), ("bulk-2", "inserted-2")):
        assert {**stored[bulk], "id": None} == {**stored[inserted], "id": None}
    assert stored["bulk"]["until"] == datetime(2030, 12, 31, 23, 30, tzinfo=UTC)
    assert stored["bulk"]["reason"] == _row("x")["reason"]


def test_a_duplicate_key_in_a_bulk_insert_is_an_integrity_error(engine: Engine) -> None:
    with Session(engine) as session:
        insert_rows(session, ENTRIES, [_row("twice")])
        session.commit()
        with pytest.raises(IntegrityError):
            insert_rows(session, ENTRIES, [_row("once"), _row("twice")])
        session.rollback()
        assert session.scalars(select(ENTRIES.c.id)).all() == ["twice"]
