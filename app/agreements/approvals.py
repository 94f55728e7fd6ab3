"""Sign-off before activation (ACCORD_REQUIRE_SIGNOFF): who must approve a version, who has.

The parties of an agreement are the agencies it names as providers and recipients,
groups expanded. An approval is of a version's terms, its document but for its status:
it holds for the versions after it that change only the status (submitted for approval,
activated, suspended), so a draft approved by every party activates at once. A version
with new terms (a revision, an import) needs every party's approval anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.policy.vocabulary import Vocabulary
from app.store.tables import AgreementApproval, AgreementVersion


@dataclass(frozen=True)
class SignOff:
    row: AgreementVersion  # the version signed off
    parties: tuple[str, ...]  # sorted
    approvals: list[AgreementApproval]  # of the version's terms, oldest first

    @property
    def missing(self) -> tuple[str, ...]:
        """The parties that have not approved the version's terms."""
        approved = {approval.agency for approval in self.approvals}
        return tuple(party for party in self.parties if party not in approved)


def _terms(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "status"}


def _same_terms(session: Session, row: AgreementVersion) -> list[int]:
    """`row`'s version and the versions just before it with the same terms."""
    versions = []
    for earlier in session.scalars(
        select(AgreementVersion)
        .where(
            AgreementVersion.agreement_id == row.agreement_id,
            AgreementVersion.version <= row.version,
        )
        .order_by(AgreementVersion.version.desc())
    ):
        if _terms(earlier.document) != _terms(row.document):
            break
        versions.append(earlier.version)
    return versions


def sign_off(session: Session, row: AgreementVersion, vocabulary: Vocabulary) -> SignOff:
    """The parties to `row` and their approvals of its terms."""
    parties = vocabulary.expand_agencies([*row.document["providers"], *row.document["recipients"]])
    approvals = session.scalars(
        select(AgreementApproval)
        .where(
            AgreementApproval.agreement_id == row.agreement_id,
            AgreementApproval.version.in_(_same_terms(session, row)),
        )
        .order_by(AgreementApproval.id)
    )
    return SignOff(row, tuple(sorted(parties)), list(approvals))


def version_sign_off(
    session: Session, agreement_id: str, version: int, vocabulary: Vocabulary
) -> SignOff:
    row = session.get(AgreementVersion, (agreement_id, version))
    if row is None:
        raise NotFound(f"agreement '{agreement_id}' has no version {version}")
    return sign_off(session, row, vocabulary)
