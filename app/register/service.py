"""The person register: record, list and remove restrictions and consents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.changelog.service import record_change
from app.errors import Conflict, InvalidRequest, NotFound
from app.policy.register import Consent, Restriction, RestrictionKind, Scope
from app.policy.vocabulary import Vocabulary
from app.register.feed import append_changes
from app.store.tables import RegisterEntry


@dataclass(frozen=True)
class NewEntry:
    id: str | None
    person_id: str
    kind: str  # sealed | objection | consent
    recipients: list[str] | None
    fields: list[str] | None
    purposes: list[str] | None
    reason: str
    until: datetime | None


def _summary(row: RegisterEntry) -> dict[str, Any]:
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


def _check_names(entry: NewEntry, vocabulary: Vocabulary) -> None:
    checks = (
        ("recipients", entry.recipients, vocabulary.is_agency_or_group, "agency or group"),
        ("fields", entry.fields, vocabulary.fields.__contains__, "field"),
        ("purposes", entry.purposes, vocabulary.purposes.__contains__, "purpose"),
    )
    for location, names, known, kind in checks:
        for index, name in enumerate(names or []):
            if not known(name):
                raise InvalidRequest(f"{location}[{index}]", f"unknown {kind} '{name}'")
    if entry.kind == "sealed" and entry.fields is None:
        raise InvalidRequest("fields", "a sealed restriction must name the fields it seals")


def add_entry(
    session: Session, *, entry: NewEntry, vocabulary: Vocabulary, actor: str
) -> RegisterEntry:
    """Record a restriction or consent; replicas take it from the register feed."""
    _check_names(entry, vocabulary)
    entry_id = entry.id or f"{entry.kind}-{uuid.uuid4()}"
    if session.get(RegisterEntry, entry_id) is not None:
        raise Conflict(f"register entry '{entry_id}' exists already")
    row = RegisterEntry(
        id=entry_id,
        person_id=entry.person_id,
        kind=entry.kind,
        recipients=entry.recipients,
        fields=entry.fields,
        purposes=entry.purposes,
        reason=entry.reason,
        until=entry.until,
        recorded_by=actor,
        recorded_at=datetime.now(UTC),
    )
    session.add(row)
    append_changes(session, [(entry_id, entry.person_id)])
    record_change(
        session,
        moves=None,  # the register feed moves instead
        actor=actor,
        action=f"register.add-{entry.kind}",
        target_type="register",
        target_id=entry_id,
        before=None,
        after=_summary(row),
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
    before = _summary(row)
    row.removed_at = datetime.now(UTC)
    row.removed_by = actor
    append_changes(session, [(entry_id, row.person_id)])
    record_change(
        session,
        moves=None,  # the register feed moves instead
        actor=actor,
        action=f"register.remove-{row.kind}",
        target_type="register",
        target_id=entry_id,
        before=before,
        after=_summary(row),
    )
    return row


def entry_of(row: RegisterEntry) -> Restriction | Consent:
    """A stored entry as the decision engine reads it."""
    scope = Scope(
        recipients=tuple(row.recipients) if row.recipients is not None else None,
        fields=tuple(row.fields) if row.fields is not None else None,
        purposes=tuple(row.purposes) if row.purposes is not None else None,
    )
    if row.kind == "consent":
        return Consent(row.id, row.person_id, scope, row.recorded_at, row.until)
    kind: RestrictionKind = "sealed" if row.kind == "sealed" else "objection"
    return Restriction(row.id, row.person_id, kind, scope, row.recorded_at, row.until)
