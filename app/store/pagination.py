"""Keyset pagination over an ever-growing sequence column, newest first."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import InvalidRequest

Row = TypeVar("Row")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "seq" or not (number.isascii() and number.isdigit()) or len(number) > 18:
            raise ValueError(cursor)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor", "is not a cursor this service gave out") from exc


def keyset_page(
    session: Session,
    query: Select[Row],
    seq: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """One page of `query` below the cursor, and the cursor of the next page (None at the end)."""
    if cursor is not None:
        query = query.where(seq < decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(seq.desc()).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(getattr(rows[limit - 1], seq.key))
    return rows, None
