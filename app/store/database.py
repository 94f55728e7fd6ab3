"""Database engine: SQLite by default, PostgreSQL (psycopg 3) by URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def make_engine(url: str, *, write_lock_at_begin: bool = False) -> Engine:
    """An engine whose commits are durable (fsync'd) on either backend.

    `write_lock_at_begin` makes SQLite take its write lock when a transaction
    begins (BEGIN IMMEDIATE), as the audit writer needs when several processes
    read and move the chain head; PostgreSQL uses row locks instead.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            pool_pre_ping=not write_lock_at_begin,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            if write_lock_at_begin:
                dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself

        if write_lock_at_begin:

            @event.listens_for(engine, "begin")
            def _begin_immediate(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # The audit writer skips the pre-ping: a dead connection fails its commit (503,
    # no decision) and is replaced, rather than costing a round trip on every batch.
    return create_engine(url, pool_pre_ping=not write_lock_at_begin, pool_size=10, max_overflow=10)


def upgrade_schema(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (the only way the schema changes)."""
    from alembic import command
    from alembic.config import Config

    from app.config import PROJECT_DIR

    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)
