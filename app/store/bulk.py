"""Many rows inserted at once, in the caller's transaction: on PostgreSQL through COPY
(psycopg's copy support), elsewhere as multi-row INSERT statements given to the driver.

Each value goes through its column's own bind processing (the UTC datetime check, JSON),
as an INSERT would give it, and a database error is raised as SQLAlchemy's (a duplicate
key: IntegrityError), as an INSERT's would be. The audit writer inserts every group
commit this way, so the per-row path is kept lean:

- PostgreSQL: one COPY. A multi-row INSERT is longer than psycopg caches its parse of,
  so it was parsed again by Python on every commit, while the chain head was locked
  (bench/chain_throughput.py found it: about 100 us per row).
- Elsewhere (SQLite): INSERT ... VALUES (...), (...) of up to ROWS_PER_STATEMENT rows.
  One statement is one driver call: a writer thread gives the GIL back once per
  statement, not once per row as `executemany` does, and under load each retake of the
  GIL waited out the event loop's switch interval.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

# 500 rows of the audit table's 26 columns stay within SQLite's 32,766 parameters.
ROWS_PER_STATEMENT = 500


@dataclass(frozen=True)
class _Columns:
    """The columns a batch of rows gives, in the table's order, with their bind processing."""

    names: tuple[str, ...]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        values = [row[name] for name in self.names]
        for position, process in self.processors:
            values[position] = process(values[position])
        return values


@functools.lru_cache(maxsize=64)
def _columns(table: Table, dialect: Dialect, given: frozenset[str]) -> _Columns:
    columns = [column for column in table.columns if column.name in given]
    return _Columns(
        names=tuple(column.name for column in columns),
        processors=tuple(
            (position, process)
            for position, column in enumerate(columns)
            if (process := column.type.dialect_impl(dialect).bind_processor(dialect))
        ),
    )


def insert_rows(
    target: Session | Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` (each with the same columns) into `table`; nothing is committed."""
    if not rows:
        return
    connection = target.connection() if isinstance(target, Session) else target
    dialect = connection.dialect
    columns = _columns(table, dialect, frozenset(rows[0]))
    if dialect.name == "postgresql":
        _copy(connection, table, columns, rows)
        return
    quote = dialect.identifier_preparer.quote
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    into = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns.names))}) VALUES "
    one_row = f"({', '.join([marker] * len(columns.names))})"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        connection.exec_driver_sql(
            into + ", ".join([one_row] * len(chunk)),
            tuple(value for row in chunk for value in columns.values(row)),
        )


def _copy(
    connection: Connection, table: Table, columns: _Columns, rows: Sequence[Mapping[str, Any]]
) -> None:
    dialect = connection.dialect
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns.names))
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(columns.values(row))
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            statement.as_string(driver), None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
