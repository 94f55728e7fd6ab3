"""Bulk import and export of the person register, as CSV or NDJSON.

An import is all or nothing: every row is parsed and checked (the same name
checks as a single entry added, `service.check_entry`) and compared with what
is stored before anything is written; every problem is named by line and
column, up to MAX_PROBLEMS, the rest counted. A good file is written in
batches of executemany through `service.write_entries`, in the caller's one
transaction, and logged as one change (`register.import`, target the file's
SHA-256 digest).

Columns: id, person, kind, recipients, fields, purposes, until, reason. In CSV
a list is space-separated names and an empty cell means all; in NDJSON a list
is a JSON array, null or absent meaning all. `until` is a date (midnight UTC),
a date-time with its offset, or empty for never.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import IO, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.changelog.service import record_change
from app.errors import Conflict, InvalidParams
from app.policy.vocabulary import Vocabulary
from app.register.service import (
    ENTRIES,
    NewEntry,
    check_entry,
    entry_row,
    summarize,
    write_entries,
)
from app.runtime.collector import collector_paused
from app.runtime.gil import ShardedDict, free_in_slices
from app.types import EntryId, LongText, PersonId, VocabularyName

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
MEDIA_TYPES: dict[Format, str] = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
COLUMNS = ("id", "person", "kind", "recipients", "fields", "purposes", "until", "reason")
REQUIRED = ("id", "person", "kind", "reason")
LISTS = ("recipients", "fields", "purposes")
KINDS = ("sealed", "objection", "consent")
MAX_PROBLEMS = 1000  # listed; the rest are counted
LOOKUP_CHUNK = 2000  # ids per SELECT ... WHERE id IN (...): its rows come in one C call
EXPORT_CHUNK = 1000  # rows per piece of a streamed export

Names = list[VocabularyName]


class _Row(BaseModel):
    """A row's format, with the request schema's own types (kind and until are parsed apart)."""

    model_config = ConfigDict(extra="forbid")

    id: EntryId
    person: PersonId
    recipients: Names | None = Field(default=None, min_length=1, max_length=200)
    fields: Names | None = Field(default=None, min_length=1, max_length=200)
    purposes: Names | None = Field(default=None, min_length=1, max_length=200)
    reason: LongText


class ImportRefused(InvalidParams):
    """A file with bad rows: nothing was stored (422)."""

    title = "Import refused: nothing stored"


@dataclass(frozen=True)
class ImportResult:
    sha256: str
    format: Format
    rows: int
    added: int
    replaced: int
    unchanged: int


class _Problems:
    def __init__(self) -> None:
        self.listed: list[tuple[str, str]] = []
        self.more = 0

    def add(self, line: int | None, column: str, reason: str) -> None:
        if len(self.listed) >= MAX_PROBLEMS:
            self.more += 1
            return
        place = "file" if line is None else f"line {line}"
        self.listed.append((f"{place}: {column}" if column else place, reason))

    def __bool__(self) -> bool:
        return bool(self.listed)

    def refuse(self, rows: int) -> ImportRefused:
        total = len(self.listed) + self.more
        return ImportRefused(
            self.listed,
            more=self.more,
            detail=f"{total} problem{'s' if total != 1 else ''} in {rows} rows, nothing stored",
        )


def format_of(name: str) -> Format | None:
    """The format a file name's extension names: .csv, or .ndjson / .jsonl."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    return None


def parse_until(value: Any) -> datetime:
    """A date (midnight UTC) or a date-time with its offset; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a date")
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"'{value}' is not a date (YYYY-MM-DD) or a date-time with its offset"
        ) from None


def format_until(until: datetime | None) -> str | None:
    if until is None:
        return None
    until = until.astimezone(UTC)
    return until.date().isoformat() if until.time() == time() else until.isoformat()


# --- parsing -------------------------------------------------------------------------


def _csv_records(text: IO[str], problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text)
    header = [cell.strip() for cell in next(reader, [])]
    for column in header:
        if column not in COLUMNS:
            problems.add(1, column, "unknown column")
        elif header.count(column) > 1:
            problems.add(1, column, "the column is named twice")
    for column in REQUIRED:
        if column not in header:
            problems.add(1, column, "missing column")
    if problems:
        return  # rows cannot be read against a broken header
    while True:
        line = reader.line_num + 1
        cells = next(reader, None)
        if cells is None:
            return
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            problems.add(line, "", f"{len(cells)} cells where the header has {len(header)}")
            continue
        values: dict[str, Any] = {}
        for column, cell in zip(header, cells, strict=True):
            if column == "reason":
                if cell:
                    values[column] = cell
                continue
            cell = cell.strip()
            if cell:
                values[column] = cell.split() if column in LISTS else cell
        yield line, values


def _ndjson_records(text: IO[str], problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problems.add(line, "", f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            problems.add(line, "", "not a JSON object")
            continue
        yield line, {key: item for key, item in value.items() if item is not None}


def _entry(
    line: int, values: dict[str, Any], vocabulary: Vocabulary, problems: _Problems
) -> NewEntry | None:
    """One record as an entry, or None with its problems added."""
    found = len(problems.listed) + problems.more
    kind = values.pop("kind", None)
    until_text = values.pop("until", None)
    if kind is None:
        problems.add(line, "kind", "a value is required")
    elif kind not in KINDS:
        problems.add(line, "kind", f"unknown kind '{kind}' (sealed, objection or consent)")
    until = None
    if until_text is not None:
        try:
            until = parse_until(until_text)
        except ValueError as exc:
            problems.add(line, "until", str(exc))
    row = None
    named: set[str] = set()
    try:
        row = _Row.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else ""
            if column in named:
                continue
            named.add(column)
            if error["type"] == "missing":
                reason = "a value is required"
            elif error["type"] == "extra_forbidden":
                reason = "unknown column"
            else:
                reason = str(error["msg"])
                if isinstance(error.get("input"), str):
                    reason += f": '{error['input']}'"
            problems.add(line, column, reason)
    # The names are checked even when another column is bad, so all problems show at once.
    entry = NewEntry(
        id=row.id if row else None,
        person_id=row.person if row else "",
        kind=kind if isinstance(kind, str) else "",
        recipients=_interned(row.recipients) if row else _names(values.get("recipients")),
        fields=_interned(row.fields) if row else _names(values.get("fields")),
        purposes=_interned(row.purposes) if row else _names(values.get("purposes")),
        reason=row.reason if row else "",
        until=until,
    )
    for location, reason in check_entry(entry, vocabulary):
        column = location.partition("[")[0]
        if column not in named:
            problems.add(line, column, reason)
    return entry if len(problems.listed) + problems.more == found else None


def _interned(names: list[str] | None) -> list[str] | None:
    """Vocabulary names, of which there are few, held once however many rows name them."""
    return None if names is None else [sys.intern(name) for name in names]


def _names(value: Any) -> list[str] | None:
    """A list column's names as given, for the name check of a row whose other columns failed."""
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    return None


def parse_entries(
    source: IO[bytes], fmt: Format, vocabulary: Vocabulary, problems: _Problems
) -> tuple[list[tuple[int, NewEntry]], int]:
    """Every good row of the file as (line, entry), and how many rows it has."""
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    entries: list[tuple[int, NewEntry]] = []
    first_line: ShardedDict[str, int] = ShardedDict()  # a million ids: app/runtime/gil.py
    rows = 0
    records = _csv_records(text, problems) if fmt == "csv" else _ndjson_records(text, problems)
    try:
        for line, values in records:
            rows += 1
            given_id = values.get("id")
            seen = first_line.setdefault(given_id, line) if isinstance(given_id, str) else line
            entry = _entry(line, values, vocabulary, problems)
            if seen != line:
                problems.add(line, "id", f"duplicate id '{given_id}' (first on line {seen})")
            elif entry is not None:
                entries.append((line, entry))
    except UnicodeDecodeError as exc:
        problems.add(None, "", f"not UTF-8 text (byte {exc.start} of a read): {exc.reason}")
    except csv.Error as exc:
        problems.add(None, "", f"not readable as CSV: {exc}")
    finally:
        text.detach()
        free_in_slices(first_line)
    return entries, rows


def read_entries(source: IO[bytes], fmt: Format, vocabulary: Vocabulary) -> list[NewEntry]:
    """Every row of a register file as an entry, checked as an import checks it, with no
    database (`accord decide --register`); ImportRefused naming every bad row."""
    problems = _Problems()
    entries, rows = parse_entries(source, fmt, vocabulary, problems)
    if problems:
        raise problems.refuse(rows)
    return [entry for _, entry in entries]


# --- import --------------------------------------------------------------------------


def _stored(session: Session, ids: list[str]) -> dict[str, Row[Any]]:
    """The stored rows among `ids` (at most LOOKUP_CHUNK of them: one SELECT each)."""
    columns = [
        ENTRIES.c[name]
        for name in (
            "id",
            "person_id",
            "kind",
            "recipients",
            "fields",
            "purposes",
            "reason",
            "until",
            "removed_at",
        )
    ]
    stored: dict[str, Row[Any]] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = ids[start : start + LOOKUP_CHUNK]
        for row in session.execute(select(*columns).where(ENTRIES.c.id.in_(chunk))):
            stored[row.id] = row
    return stored


def _sha256(source: IO[bytes]) -> str:
    """The digest of the whole file, which is then read again from its start."""
    hashed = hashlib.sha256()
    while chunk := source.read(1 << 20):
        hashed.update(chunk)
    source.seek(0)
    return hashed.hexdigest()


def _same(entry: NewEntry, row: Row[Any]) -> bool:
    return (
        entry.person_id,
        entry.kind,
        entry.recipients,
        entry.fields,
        entry.purposes,
        entry.reason,
        entry.until,
    ) == (row.person_id, row.kind, row.recipients, row.fields, row.purposes, row.reason, row.until)


@collector_paused()  # a million parsed rows would set off full collections
def import_register(
    session: Session,
    source: IO[bytes],
    *,
    fmt: Format,
    vocabulary: Vocabulary,
    actor: str,
    replace: bool,
) -> ImportResult:
    """Check the whole file, then store it in the session's transaction (not committed).

    Raises ImportRefused naming every problem, with nothing written. An id stored
    with the same content is unchanged; with other content it is refused unless
    `replace`, when the row is updated in place (recorded anew by `actor`) and its
    previous content is kept in the change record. A removed entry's id is never
    reused: its row keeps the record of what was in force and who removed it.
    """
    digest = _sha256(source)
    problems = _Problems()
    entries, rows = parse_entries(source, fmt, vocabulary, problems)
    added: list[NewEntry] = []
    replaced: list[NewEntry] = []
    try:
        now = datetime.now(UTC)
        previous: dict[str, dict[str, Any]] = {}  # a replaced entry's stored content, for the log
        unchanged = 0
        for start in range(0, len(entries), LOOKUP_CHUNK):
            chunk = entries[start : start + LOOKUP_CHUNK]
            stored = _stored(session, [entry.id for _, entry in chunk if entry.id is not None])
            for line, entry in chunk:
                row = stored.get(entry.id or "")
                if row is None:
                    added.append(entry)
                elif row.removed_at is not None:
                    problems.add(
                        line,
                        "id",
                        f"entry '{entry.id}' was removed; a removed entry's id is not reused",
                    )
                elif _same(entry, row):
                    unchanged += 1
                elif replace:
                    replaced.append(entry)
                    previous[row.id] = summarize(row)
                else:
                    problems.add(
                        line,
                        "id",
                        f"entry '{entry.id}' is stored with other content; replace it to change it",
                    )
        if problems:
            raise problems.refuse(rows)

        try:
            write_entries(
                session,
                added=(_stored_row(entry, actor, now) for entry in added),
                changed=(_stored_row(entry, actor, now) for entry in replaced),
            )
        except IntegrityError:
            raise Conflict(
                "another change stored some of these ids during the import; nothing stored, "
                "import the file again"
            ) from None
        result = ImportResult(digest, fmt, rows, len(added), len(replaced), unchanged)
        if added or replaced:
            record_change(
                session,
                moves=None,  # the register feed moves instead (write_entries)
                actor=actor,
                action="register.import",
                target_type="register",
                target_id=digest,
                before={"replaced": previous} if previous else None,
                after={
                    "sha256": digest,
                    "format": fmt,
                    "rows": rows,
                    "added": len(added),
                    "replaced": len(replaced),
                    "unchanged": unchanged,
                },
            )
        return result
    finally:
        free_in_slices(entries, added, replaced)  # freed at once: a stall (app/runtime/gil.py)


def _stored_row(entry: NewEntry, actor: str, at: datetime) -> dict[str, Any]:
    assert entry.id is not None  # every imported row names its id
    return entry_row(entry, entry_id=entry.id, actor=actor, at=at)


# --- export --------------------------------------------------------------------------


def _live_rows(session: Session) -> Iterator[Row[Any]]:
    query = (
        select(ENTRIES)
        .where(ENTRIES.c.removed_at.is_(None))
        .order_by(ENTRIES.c.person_id, ENTRIES.c.id)
        .execution_options(yield_per=EXPORT_CHUNK)
    )
    yield from session.execute(query)


def _record(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "person": row.person_id,
        "kind": row.kind,
        "recipients": row.recipients,
        "fields": row.fields,
        "purposes": row.purposes,
        "until": format_until(row.until),
        "reason": row.reason,
    }


def export_register(session: Session, fmt: Format) -> Iterator[bytes]:
    """Every live entry, ordered by person then id, as pieces of a CSV or NDJSON file."""
    return _pieces(_live_rows(session), fmt)


def _pieces(rows: Iterable[Row[Any]], fmt: Format) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(COLUMNS)
    pending = 0
    for row in rows:
        record = _record(row)
        if fmt == "csv":
            writer.writerow(
                [
                    " ".join(value) if column in LISTS and value is not None else value or ""
                    for column, value in record.items()
                ]
            )
        else:
            buffer.write(orjson.dumps(record).decode())
            buffer.write("\n")
        pending += 1
        if pending >= EXPORT_CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if buffer.tell():
        yield buffer.getvalue().encode()
