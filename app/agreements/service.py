"""Storing agreements as immutable versions; the one import path for files and the API."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import AgreementVersion
from app.policy.agreements import Agreement, AgreementInvalid, Problem, parse_agreement
from app.policy.vocabulary import Vocabulary
from app.policy_state import bump_revision


@dataclass(frozen=True)
class ImportResult:
    agreement_id: str
    version: int
    changed: bool


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


def current_version(session: Session, agreement_id: str) -> AgreementVersion:
    row = session.scalars(
        select(AgreementVersion)
        .where(AgreementVersion.agreement_id == agreement_id)
        .order_by(AgreementVersion.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"no agreement '{agreement_id}'")
    return row


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


def import_agreements(
    session: Session, documents: list[tuple[str, Any]], *, vocabulary: Vocabulary, actor: str
) -> list[ImportResult]:
    """Validate every document, then store each changed one as a new version.

    All or nothing: one invalid document refuses the whole import, so the
    live policy never holds half of a set of files.
    """
    parsed: list[tuple[Agreement, dict[str, Any]]] = []
    problems: list[AgreementInvalid] = []
    seen: set[str] = set()
    for source, document in documents:
        try:
            agreement = parse_agreement(document, vocabulary, source=source)
        except AgreementInvalid as exc:
            problems.append(exc)
            continue
        if agreement.id in seen:
            duplicate = Problem("id", f"'{agreement.id}' appears twice in this import")
            problems.append(AgreementInvalid(source, [duplicate]))
            continue
        seen.add(agreement.id)
        parsed.append((agreement, _canonical(document)))
    if problems:
        raise ImportRefused(problems)

    current = {row.agreement_id: row for row in current_versions(session)}
    results: list[ImportResult] = []
    now = datetime.now(UTC)
    for agreement, document in parsed:
        digest = _digest(document)
        previous = current.get(agreement.id)
        if previous is not None and previous.content_sha256 == digest:
            results.append(ImportResult(agreement.id, previous.version, changed=False))
            continue
        version = 1 if previous is None else previous.version + 1
        session.add(
            AgreementVersion(
                agreement_id=agreement.id,
                version=version,
                status=agreement.status,
                document=document,
                content_sha256=digest,
                created_at=now,
                created_by=actor,
            )
        )
        results.append(ImportResult(agreement.id, version, changed=True))
    if any(result.changed for result in results):
        bump_revision(session)
    return results


class ImportRefused(ValueError):
    """One or more documents of an import were invalid; nothing was stored."""

    def __init__(self, problems: list[AgreementInvalid]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))
