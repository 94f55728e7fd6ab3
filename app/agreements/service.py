"""Agreements as immutable versions: create, revise, activate, suspend, revoke, import,
and the parties' approvals that activation awaits with ACCORD_REQUIRE_SIGNOFF.

Every write goes through `_store_version`: the document is validated against
the vocabulary, stored as the next version, logged in the change log and the
policy revision is bumped, all in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.agreements import approvals
from app.changelog.service import record_change
from app.errors import Conflict, InvalidRequest, NotFound
from app.policy.agreements import Agreement, AgreementInvalid, Problem, parse_agreement
from app.policy.vocabulary import Vocabulary
from app.store.revisions import POLICY
from app.store.tables import AgreementApproval, AgreementVersion

PENDING = "pending-approval"  # activated, awaiting the approval of every party
# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"draft", "suspended", PENDING}), "active"),
    "suspend": (frozenset({"active"}), "suspended"),
    "revoke": (frozenset({"draft", "active", "suspended", PENDING}), "revoked"),
}
PAST_TENSE = {"activate": "activated", "suspend": "suspended", "revoke": "revoked"}
SUBMITTED = "submitted"  # an activation that awaits approvals: the version is PENDING
APPROVABLE = frozenset({"draft", "suspended", PENDING})  # statuses a party may approve in
# The changes an import makes; any other was made over the API
IMPORTED = "imported"
FORCE_IMPORTED = "force-imported"  # over changes made over the API since the last import


@dataclass(frozen=True)
class ImportResult:
    agreement_id: str
    version: int
    change: str | None  # IMPORTED or FORCE_IMPORTED; None: the file is the current version


class ImportRefused(ValueError):
    """An import was refused, nothing stored: `problems` names each bad file (unreadable
    or invalid) and each agreement changed over the API since its last import."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _canonical(document: Any) -> Any:
    """JSON-ready document: YAML dates become ISO strings."""
    if isinstance(document, dict):
        return {str(key): _canonical(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_canonical(value) for value in document]
    if isinstance(document, date):
        return document.isoformat()
    return document


def _digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _summary(row: AgreementVersion | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"version": row.version, "status": row.status, "document": row.document}


def current_versions(session: Session) -> list[AgreementVersion]:
    latest = (
        select(AgreementVersion.agreement_id, func.max(AgreementVersion.version).label("version"))
        .group_by(AgreementVersion.agreement_id)
        .subquery()
    )
    return list(
        session.scalars(
            select(AgreementVersion)
            .join(
                latest,
                (AgreementVersion.agreement_id == latest.c.agreement_id)
                & (AgreementVersion.version == latest.c.version),
            )
            .order_by(AgreementVersion.agreement_id)
        )
    )


def _latest(session: Session, agreement_id: str) -> AgreementVersion | None:
    return session.scalars(
        select(AgreementVersion)
        .where(AgreementVersion.agreement_id == agreement_id)
        .order_by(AgreementVersion.version.desc())
        .limit(1)
    ).first()


def current_version(session: Session, agreement_id: str) -> AgreementVersion:
    row = _latest(session, agreement_id)
    if row is None:
        raise NotFound(f"no agreement '{agreement_id}'")
    return row


def _locked_current(session: Session, agreement_id: str) -> AgreementVersion:
    """The current version, under a lock on it held until the transaction ends, so the
    approvals and activations of one agreement take turns, each seeing what those before
    it committed. The lock is a write of nothing to the version (PostgreSQL's row lock,
    SQLite's one writer); a version added meanwhile is a conflict."""
    row = current_version(session, agreement_id)
    session.execute(
        update(AgreementVersion)
        .where(
            AgreementVersion.agreement_id == agreement_id,
            AgreementVersion.version == row.version,
        )
        .values(status=AgreementVersion.status)
        .execution_options(synchronize_session=False)
    )
    if current_version(session, agreement_id).version != row.version:
        raise Conflict(f"agreement '{agreement_id}' changed meanwhile; read it again and retry")
    return row


def version_history(session: Session, agreement_id: str) -> list[AgreementVersion]:
    rows = list(
        session.scalars(
            select(AgreementVersion)
            .where(AgreementVersion.agreement_id == agreement_id)
            .order_by(AgreementVersion.version)
        )
    )
    if not rows:
        raise NotFound(f"no agreement '{agreement_id}'")
    return rows


def current_agreements(session: Session, vocabulary: Vocabulary) -> list[Agreement]:
    """The current version of every agreement, validated against the vocabulary."""
    return [
        parse_agreement(
            row.document,
            vocabulary,
            version=row.version,
            source=f"{row.agreement_id} v{row.version}",
        )
        for row in current_versions(session)
    ]


def _store_version(
    session: Session,
    *,
    document: dict[str, Any],
    vocabulary: Vocabulary,
    previous: AgreementVersion | None,
    change: str,
    reason: str | None,
    actor: str,
    source: str = "agreement",
) -> AgreementVersion:
    agreement = parse_agreement(document, vocabulary, source=source)
    row = AgreementVersion(
        agreement_id=agreement.id,
        version=1 if previous is None else previous.version + 1,
        status=agreement.status,
        document=document,
        content_sha256=_digest(document),
        change=change,
        reason=reason,
        created_at=datetime.now(UTC),
        created_by=actor,
    )
    session.add(row)
    record_change(
        session,
        moves=POLICY,
        actor=actor,
        action=f"agreement.{change}",
        target_type="agreement",
        target_id=agreement.id,
        before=_summary(previous),
        after=_summary(row),
    )
    return row


def create_agreement(
    session: Session, *, document: dict[str, Any], vocabulary: Vocabulary, actor: str
) -> AgreementVersion:
    """A new agreement starts as a draft (version 1)."""
    document = _canonical(document)
    status = document.setdefault("status", "draft")
    if status != "draft":
        raise InvalidRequest("status", "a new agreement starts as draft; activate it afterwards")
    agreement_id = document.get("id")
    if isinstance(agreement_id, str) and _latest(session, agreement_id) is not None:
        raise Conflict(f"agreement '{agreement_id}' exists already; post a new version instead")
    return _store_version(
        session,
        document=document,
        vocabulary=vocabulary,
        previous=None,
        change="created",
        reason=None,
        actor=actor,
    )


def revise_agreement(
    session: Session,
    *,
    agreement_id: str,
    document: dict[str, Any],
    vocabulary: Vocabulary,
    reason: str | None,
    actor: str,
    signoff: bool = False,
) -> AgreementVersion:
    """A new version with changed terms; its status stays what it was, but with `signoff`
    (ACCORD_REQUIRE_SIGNOFF) new terms of an active agreement await every party's approval."""
    previous = current_version(session, agreement_id)
    if previous.status == "revoked":
        raise Conflict(f"agreement '{agreement_id}' is revoked; it cannot change")
    document = _canonical(document)
    # The whole document, id included, as the schema says (one without is refused as any is)
    if "id" in document and document["id"] != agreement_id:
        raise InvalidRequest("id", f"a version of '{agreement_id}' must keep its id")
    status = document.setdefault("status", previous.status)
    if status != previous.status:
        raise InvalidRequest(
            "status", "status changes through activate, suspend or revoke, not a new version"
        )
    if _digest(document) == previous.content_sha256:
        raise Conflict(f"the document is the same as version {previous.version}")
    if signoff and status == "active":
        document["status"] = PENDING
    return _store_version(
        session,
        document=document,
        vocabulary=vocabulary,
        previous=previous,
        change="revised",
        reason=reason,
        actor=actor,
    )


def change_status(
    session: Session,
    *,
    agreement_id: str,
    action: str,
    reason: str | None,
    vocabulary: Vocabulary,
    actor: str,
    signoff: bool = False,
) -> AgreementVersion:
    """Activate, suspend or revoke: a new version that differs only in status.

    With `signoff` (ACCORD_REQUIRE_SIGNOFF) an activation leads to PENDING until every
    party has approved the version's terms, and a PENDING version activates only then."""
    starts, target = TRANSITIONS[action]
    change = PAST_TENSE[action]
    if signoff and action == "activate":
        previous = _locked_current(session, agreement_id)  # approvals arriving meanwhile wait
        missing = approvals.sign_off(session, previous, vocabulary).missing
        if missing and previous.status == PENDING:
            awaited = ", ".join(missing)
            raise Conflict(f"agreement '{agreement_id}' awaits the approval of {awaited}")
        if missing:
            target, change = PENDING, SUBMITTED
    else:
        previous = current_version(session, agreement_id)
    if previous.status not in starts:
        raise Conflict(f"agreement '{agreement_id}' is {previous.status}; it cannot {action}")
    return _store_version(
        session,
        document={**previous.document, "status": target},
        vocabulary=vocabulary,
        previous=previous,
        change=change,
        reason=reason,
        actor=actor,
    )


def approve_version(
    session: Session,
    *,
    agreement_id: str,
    version: int,
    agency: str,
    signatory: str,
    note: str | None,
    client: str,
    vocabulary: Vocabulary,
    now: datetime,
) -> AgreementVersion:
    """Record `signatory`'s approval, for the party `agency`, of the agreement's current
    version `version`, sent by `client`, and log it. The approval that completes the
    sign-off of a PENDING version activates it, as `activate` does. Returns the current
    version afterwards."""
    row = _locked_current(session, agreement_id)
    if version > row.version:
        raise NotFound(f"agreement '{agreement_id}' has no version {version}")
    if version < row.version:
        raise Conflict(f"version {version} of '{agreement_id}' is not current: {row.version} is")
    if row.status not in APPROVABLE:
        raise Conflict(f"agreement '{agreement_id}' is {row.status}; there is nothing to approve")
    state = approvals.sign_off(session, row, vocabulary)
    if agency not in state.parties:
        raise InvalidRequest(
            "agency", f"{agency} is not a party to '{agreement_id}': {', '.join(state.parties)} are"
        )
    earlier = next((a for a in state.approvals if a.agency == agency), None)
    if earlier is not None:
        raise Conflict(
            f"{agency} approved these terms already (version {earlier.version}, "
            f"signed by {earlier.signatory})"
        )
    session.add(
        AgreementApproval(
            agreement_id=agreement_id,
            version=version,
            agency=agency,
            signatory=signatory,
            client=client,
            note=note,
            approved_at=now,
        )
    )
    record_change(
        session,
        moves=None,  # an approval changes no policy; the activation it completes does
        actor=client,
        action="agreement.approved",
        target_type="agreement",
        target_id=agreement_id,
        before=None,
        after={
            "version": version,
            "agency": agency,
            "signatory": signatory,
            "client": client,
            "note": note,
        },
    )
    if row.status == PENDING and state.missing == (agency,):
        return change_status(
            session,
            agreement_id=agreement_id,
            action="activate",
            reason=f"approved by every party, last by {signatory} for {agency}",
            vocabulary=vocabulary,
            actor=client,
            signoff=True,
        )
    return row


def _changed_elsewhere(session: Session, agreement_id: str) -> list[AgreementVersion]:
    """The versions made since the agreement's last import (all of them if it never
    was): each is a change made over the API, not by an import."""
    last_import = (
        select(func.coalesce(func.max(AgreementVersion.version), 0))
        .where(
            AgreementVersion.agreement_id == agreement_id,
            AgreementVersion.change.in_((IMPORTED, FORCE_IMPORTED)),
        )
        .scalar_subquery()
    )
    return list(
        session.scalars(
            select(AgreementVersion)
            .where(
                AgreementVersion.agreement_id == agreement_id,
                AgreementVersion.version > last_import,
            )
            .order_by(AgreementVersion.version)
        )
    )


def _described(rows: list[AgreementVersion]) -> str:
    """`v2 suspended by ig.jones at 2026-11-25T09:38:29Z (reason); v3 ...`"""
    return "; ".join(
        f"v{row.version} {row.change} by {row.created_by} at {row.created_at:%Y-%m-%dT%H:%M:%SZ}"
        + (f" ({row.reason})" if row.reason else "")
        for row in rows
    )


def import_agreements(
    session: Session,
    documents: list[tuple[str, Any]],
    *,
    vocabulary: Vocabulary,
    actor: str,
    force: bool = False,
    unreadable: Sequence[ValueError] = (),
) -> list[ImportResult]:
    """Validate every document, then store each new or changed one as a version.

    All or nothing: a file that could not be read (`unreadable`), an invalid
    document, or an agreement changed over the API since its last import that
    the import would change (undoing a suspension, say) refuses the whole
    import, naming each, so the live policy never holds half of a set of files.
    With `force` the import overwrites such changes, recorded as FORCE_IMPORTED; a
    revoked agreement is final, as it is over the API, and refuses any change.
    """
    parsed: list[tuple[Agreement, dict[str, Any], str]] = []
    problems = [str(exc) for exc in unreadable]
    seen: set[str] = set()
    for source, document in documents:
        try:
            agreement = parse_agreement(document, vocabulary, source=source)
        except AgreementInvalid as exc:
            problems.append(str(exc))
            continue
        if agreement.id in seen:
            duplicate = Problem("id", f"'{agreement.id}' appears twice in this import")
            problems.append(str(AgreementInvalid(source, [duplicate])))
            continue
        seen.add(agreement.id)
        parsed.append((agreement, _canonical(document), source))

    results: list[ImportResult] = []
    changed: list[tuple[dict[str, Any], str, AgreementVersion | None, list[AgreementVersion]]] = []
    for agreement, document, source in parsed:
        previous = _latest(session, agreement.id)
        if previous is not None and previous.content_sha256 == _digest(document):
            results.append(ImportResult(agreement.id, previous.version, change=None))
            continue
        if previous is not None and previous.status == "revoked":
            problems.append(
                f"{source}: '{agreement.id}' is revoked; it cannot change, not even with "
                "--force (a revocation is final: give the agreement a new id)"
            )
            continue
        elsewhere = [] if previous is None else _changed_elsewhere(session, agreement.id)
        if elsewhere and not force:
            problems.append(
                f"{source}: '{agreement.id}' was changed over the API since its last import: "
                f"{_described(elsewhere)}; --force imports over that"
            )
        changed.append((document, source, previous, elsewhere))
    if problems:
        raise ImportRefused(problems)

    for document, source, previous, elsewhere in changed:
        reason = f"imported from {source}"
        if elsewhere:
            reason += f", forced over {_described(elsewhere)}"
        row = _store_version(
            session,
            document=document,
            vocabulary=vocabulary,
            previous=previous,
            change=FORCE_IMPORTED if elsewhere else IMPORTED,
            reason=reason,
            actor=actor,
            source=source,
        )
        results.append(ImportResult(row.agreement_id, row.version, change=row.change))
    return results
