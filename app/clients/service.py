"""API clients: random keys shown once, stored as SHA-256 digests, bound to agencies."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.changelog.service import record_change
from app.errors import Conflict, InvalidRequest, NotFound
from app.policy.vocabulary import Vocabulary
from app.runtime.callers import SCOPES, Caller, key_digest
from app.store.revisions import CLIENTS
from app.store.tables import ApiClient

KEY_PREFIX = "acc_"


def _summary(row: ApiClient) -> dict[str, Any]:
    return {
        "name": row.name,
        "scopes": row.scopes,
        "agencies": row.agencies,
        "revoked": row.revoked_at is not None,
    }


def create_client(
    session: Session,
    *,
    client_id: str,
    name: str,
    scopes: list[str],
    agencies: list[str],
    vocabulary: Vocabulary,
    actor: str,
) -> tuple[ApiClient, str]:
    """Store a new client and move the client revision (not the policy's); returns it
    and its key, which is never shown again."""
    for index, scope in enumerate(scopes):
        if scope not in SCOPES:
            raise InvalidRequest(f"scopes[{index}]", f"unknown scope '{scope}'")
    if not scopes:
        raise InvalidRequest("scopes", "a client needs at least one scope")
    if not agencies:
        raise InvalidRequest("agencies", "a client is bound to at least one agency")
    for index, agency in enumerate(agencies):
        if agency not in vocabulary.agencies:
            raise InvalidRequest(f"agencies[{index}]", f"unknown agency '{agency}'")
    if session.get(ApiClient, client_id) is not None:
        raise Conflict(f"client '{client_id}' exists already")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiClient(
        id=client_id,
        name=name,
        scopes=sorted(set(scopes)),
        agencies=sorted(set(agencies)),
        key_sha256=key_digest(key),
        created_at=datetime.now(UTC),
        created_by=actor,
    )
    session.add(row)
    record_change(
        session,
        moves=CLIENTS,
        actor=actor,
        action="client.create",
        target_type="client",
        target_id=client_id,
        before=None,
        after=_summary(row),
    )
    return row, key


def revoke_client(session: Session, *, client_id: str, actor: str) -> ApiClient:
    """Revoke a client and move the client revision: replicas drop its key at their next poll."""
    row = session.get(ApiClient, client_id)
    if row is None:
        raise NotFound(f"no client '{client_id}'")
    if row.revoked_at is not None:
        raise Conflict(f"client '{client_id}' was revoked already")
    before = _summary(row)
    # Only while it is still live: of concurrent revocations that all read it live, the
    # database lets one through and the others find it revoked (409), not all of them.
    revoked = session.execute(
        update(ApiClient)
        .where(ApiClient.id == client_id, ApiClient.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_by=actor)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], revoked).rowcount != 1:
        raise Conflict(f"client '{client_id}' was revoked already")
    session.refresh(row)
    record_change(
        session,
        moves=CLIENTS,
        actor=actor,
        action="client.revoke",
        target_type="client",
        target_id=client_id,
        before=before,
        after=_summary(row),
    )
    return row


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.id)))


def load_callers(session: Session) -> dict[str, Caller]:
    """Every live client by its key digest, for authenticating requests."""
    return {
        row.key_sha256: Caller(
            client_id=row.id, agencies=frozenset(row.agencies), scopes=frozenset(row.scopes)
        )
        for row in session.scalars(select(ApiClient).where(ApiClient.revoked_at.is_(None)))
    }
