"""What every command shares: the database engine, opened and disposed in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from app.config import get_settings
from app.store.database import make_engine


@contextmanager
def database() -> Iterator[Engine]:
    """An engine on ACCORD_DATABASE_URL for one command, disposed when it ends."""
    engine = make_engine(get_settings().database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def listed(text: str) -> list[str]:
    """A comma-separated option as a list."""
    return [item.strip() for item in text.split(",") if item.strip()]
