"""The person register: record, list and remove restrictions and consents."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, Row, String, Table, bindparam, select, update
from sqlalchemy import cast as cast_as
from sqlalchemy.orm import Session

from app.changelog.service import record_change
from app.errors import Conflict, InvalidParams, NotFound
from app.policy.lines import FOREVER
from app.policy.register import (
    Consent,
    PersonRegister,
    Restriction,
    RestrictionKind,
    Scope,
)
from app.policy.vocabulary import Vocabulary
from app.register.feed import CHANGES_PER_READ, append_changes
from app.runtime.gil import ShardedDict
from app.store.bulk import insert_rows
from app.store.tables import RegisterChange, RegisterEntry, utc_second_text

WRITE_BATCH = 2_000  # rows per executemany or COPY; an executemany holds the GIL (~1 ms)
ENTRIES = cast(Table, RegisterEntry.__table__)


@dataclass(frozen=True, slots=True)
class NewEntry:
    id: str | None
    person_id: str
    kind: str  # sealed | objection | consent
    recipients: list[str] | None
    fields: list[str] | None
    purposes: list[str] | None
    reason: str
    until: datetime | None


def summarize(row: RegisterEntry | Row[Any]) -> dict[str, Any]:
    """An entry as the change log records it (an ORM row or a selected Core row)."""
    return {
        "person_id": row.person_id,
        "kind": row.kind,
        "recipients": row.recipients,
        "fields": row.fields,
        "purposes": row.purposes,
        "reason": row.reason,
        "until": row.until.isoformat() if row.until else None,
        "removed": row.removed_at is not None,
    }


def check_entry(entry: NewEntry, vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """Every rule an entry breaks against the vocabulary, as (place, reason); [] if none.

    The one check of names, for a single entry added and for every row imported.
    """
    problems: list[tuple[str, str]] = []
    checks = (
        ("recipients", entry.recipients, vocabulary.is_agency_or_group, "agency or group"),
        ("fields", entry.fields, vocabulary.fields.__contains__, "field"),
        ("purposes", entry.purposes, vocabulary.purposes.__contains__, "purpose"),
    )
    for location, names, known, kind in checks:
        for index, name in enumerate(names or []):
            if not known(name):
                problems.append((f"{location}[{index}]", f"unknown {kind} '{name}'"))
    if entry.kind == "sealed" and entry.fields is None:
        problems.append(("fields", "a sealed restriction must name the fields it seals"))
    return problems


def entry_row(entry: NewEntry, *, entry_id: str, actor: str, at: datetime) -> dict[str, Any]:
    """The column values of a newly recorded entry."""
    return {
        "id": entry_id,
        "person_id": entry.person_id,
        "kind": entry.kind,
        "recipients": entry.recipients,
        "fields": entry.fields,
        "purposes": entry.purposes,
        "reason": entry.reason,
        "until": entry.until,
        "recorded_by": actor,
        "recorded_at": at,
        "removed_by": None,
        "removed_at": None,
    }


def write_entries(
    session: Session,
    *,
    added: Iterable[dict[str, Any]] = (),
    changed: Iterable[dict[str, Any]] = (),
    live_only: bool = False,
) -> int:
    """The one place register rows are written: insert `added`, update `changed` by id,
    and append a change for each to the register feed (app/register/feed.py).

    Every row of `changed` carries `id` and the same columns to set. Both go in
    batches of WRITE_BATCH (added: app/store/bulk.py, COPY on PostgreSQL; changed:
    executemany) inside the caller's transaction (taken
    lazily, so a million rows are never all in memory as dicts); nothing is committed.
    With `live_only` a row of `changed` is updated only while it is not removed (the
    database decides, so of concurrent removals one does). Returns how many rows of
    `changed` were updated.
    """
    for batch in _batches(added):
        insert_rows(session, ENTRIES, batch)
        append_changes(session, [row["id"] for row in batch])
    statement = None
    updated = 0
    for batch in _batches(changed):
        if statement is None:
            columns = [column for column in batch[0] if column != "id"]
            statement = (
                update(ENTRIES)
                .where(ENTRIES.c.id == bindparam("b_id"))
                .values({column: bindparam(f"b_{column}") for column in columns})
            )
            if live_only:
                statement = statement.where(ENTRIES.c.removed_at.is_(None))
        result = session.execute(
            statement, [{f"b_{key}": value for key, value in row.items()} for row in batch]
        )
        updated += cast(CursorResult[Any], result).rowcount
        append_changes(session, [row["id"] for row in batch])
    return updated


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, WRITE_BATCH)):
        yield batch


def add_entry(
    session: Session, *, entry: NewEntry, vocabulary: Vocabulary, actor: str
) -> RegisterEntry:
    """Record a restriction or consent; replicas take it from the register feed."""
    problems = check_entry(entry, vocabulary)
    if problems:
        raise InvalidParams(problems)
    entry_id = entry.id or f"{entry.kind}-{uuid.uuid4()}"
    if session.get(RegisterEntry, entry_id) is not None:
        raise Conflict(f"register entry '{entry_id}' exists already")
    write_entries(
        session, added=[entry_row(entry, entry_id=entry_id, actor=actor, at=datetime.now(UTC))]
    )
    row = session.get_one(RegisterEntry, entry_id)
    record_change(
        session,
        moves=None,  # the register feed moves instead
        actor=actor,
        action=f"register.add-{entry.kind}",
        target_type="register",
        target_id=entry_id,
        before=None,
        after=summarize(row),
    )
    return row


def list_entries(session: Session, *, person_id: str, include_removed: bool) -> list[RegisterEntry]:
    query = select(RegisterEntry).where(RegisterEntry.person_id == person_id)
    if not include_removed:
        query = query.where(RegisterEntry.removed_at.is_(None))
    return list(session.scalars(query.order_by(RegisterEntry.recorded_at, RegisterEntry.id)))


def remove_entry(session: Session, *, entry_id: str, actor: str) -> RegisterEntry:
    """Mark an entry removed (kept for the record); replicas take it from the register feed."""
    row = session.get(RegisterEntry, entry_id)
    if row is None:
        raise NotFound(f"no register entry '{entry_id}'")
    if row.removed_at is not None:
        raise Conflict(f"register entry '{entry_id}' was removed already")
    before = summarize(row)
    removed = write_entries(
        session,
        changed=[{"id": entry_id, "removed_at": datetime.now(UTC), "removed_by": actor}],
        live_only=True,  # a concurrent removal may have come first since the read above
    )
    if removed != 1:
        raise Conflict(f"register entry '{entry_id}' was removed already")
    session.refresh(row)
    record_change(
        session,
        moves=None,  # the register feed moves instead
        actor=actor,
        action=f"register.remove-{row.kind}",
        target_type="register",
        target_id=entry_id,
        before=before,
        after=summarize(row),
    )
    return row


# A stored entry as a replica reads it, at start (a million of them) and from the
# feed: plain rows, the times as text made by the database (no datetime is made),
# the dimensions as JSON text.
ENTRY_COLUMNS = (
    RegisterEntry.id,
    RegisterEntry.person_id,
    RegisterEntry.kind,
    utc_second_text(RegisterEntry.recorded_at),
    utc_second_text(RegisterEntry.until),
    cast_as(RegisterEntry.recipients, String),
    cast_as(RegisterEntry.fields, String),
    cast_as(RegisterEntry.purposes, String),
)
Entry = Restriction | Consent


class _Entries:
    """Rows of ENTRY_COLUMNS as the decision engine's entries. Dimensions are decoded
    once per distinct JSON text, so entries with the same dimensions share one Scope."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[str | None, str | None, str | None], Scope] = {}

    def __call__(
        self,
        entry_id: str,
        person_id: str,
        kind: str,
        recorded: str,
        until: str | None,
        *dimensions: str | None,
    ) -> Entry:
        key = (dimensions[0], dimensions[1], dimensions[2])
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = Scope(*(_names(text) for text in key))
        person = sys.intern(person_id)  # held once, however many entries the person has
        window = (recorded, until or FOREVER)
        if kind == "consent":
            return Consent(entry_id, person, scope, window)
        restriction: RestrictionKind = "sealed" if kind == "sealed" else "objection"
        return Restriction(entry_id, person, restriction, scope, window)


def _names(text: str | None) -> tuple[str, ...] | None:
    names: list[str] | None = None if text is None else orjson.loads(text)
    return None if names is None else tuple(sys.intern(name) for name in names)


@dataclass(frozen=True)
class LoadedRegister:
    by_person: ShardedDict[str, PersonRegister]
    person_of: ShardedDict[str, str]  # entry id -> the person it is filed under


def load_register(session: Session) -> LoadedRegister:
    """Every live entry, by person: a replica's view of the register when it starts."""
    read = _Entries()
    entries: dict[str, tuple[list[Restriction], list[Consent]]] = {}
    person_of: ShardedDict[str, str] = ShardedDict()
    rows = session.connection().execute(
        select(*ENTRY_COLUMNS)
        .where(RegisterEntry.removed_at.is_(None))
        .execution_options(yield_per=10_000)
    )
    for row in rows:
        entry = read(*row)
        lists = entries.get(entry.person_id)
        if lists is None:
            lists = entries[entry.person_id] = ([], [])
        if isinstance(entry, Consent):
            lists[1].append(entry)
        else:
            lists[0].append(entry)
        person_of[entry.id] = entry.person_id
    by_person: ShardedDict[str, PersonRegister] = ShardedDict()
    for person, (restrictions, consents) in entries.items():
        by_person[person] = PersonRegister(tuple(restrictions), tuple(consents))
    return LoadedRegister(by_person, person_of)


def changes_after(session: Session, seq: int) -> list[tuple[int, str, Entry | None]]:
    """Up to CHANGES_PER_READ changes of the register feed numbered after `seq`, oldest
    first: (seq, entry id, the entry as it now stands; None if removed or gone)."""
    read = _Entries()
    rows = session.connection().execute(
        select(
            RegisterChange.seq,
            RegisterChange.entry_id,
            utc_second_text(RegisterEntry.removed_at),
            *ENTRY_COLUMNS,
        )
        .outerjoin_from(RegisterChange, RegisterEntry, RegisterEntry.id == RegisterChange.entry_id)
        .where(RegisterChange.seq > seq)
        .order_by(RegisterChange.seq)
        .limit(CHANGES_PER_READ)
    )
    return [
        (change, entry_id, read(*entry) if entry[0] is not None and removed is None else None)
        for change, entry_id, removed, *entry in rows
    ]
