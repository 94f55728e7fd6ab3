"""Many rows inserted at once, in the caller's transaction: on PostgreSQL through COPY
(psycopg's copy support), elsewhere as one executemany.

Each value goes through its column's own bind processing (the UTC datetime
check, JSON), as an INSERT would give it, and a COPY's database error is raised
as SQLAlchemy's (a duplicate key: IntegrityError), as an INSERT's would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from sqlalchemy import Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (each with the same columns) into `table`; nothing is committed."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        connection.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for process, value in zip(processors, row.values(), strict=True)
                    ]
                )
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            statement.as_string(driver), None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
