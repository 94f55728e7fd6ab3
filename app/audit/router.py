"""HTTP for auditors (scope `audit`): search, export, subject access, break-glass review, verify."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import Connection

from app.audit import queries, reviews
from app.audit.integrity import head_decision_id, read_head, verify_chain
from app.audit.record import AuditRecord, RecordedObligation
from app.audit.signing import AuditSigner
from app.decision.reasons import ReasonCode
from app.policy.vocabulary import Tree, Vocabulary
from app.store.tables import AuditDecision
from app.types import (
    EntryId,
    LongText,
    PersonId,
    PersonName,
    ShortText,
    UtcDatetime,
    VocabularyName,
)
from app.web.auth import Auditor
from app.web.deps import AppSettings, DbSession, Live, Now
from app.web.paths import REST
from app.web.problems import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit"])
DecisionId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]


class _NamesOverriddenObjection(BaseModel):
    decision: Literal["permit", "deny"]
    restriction_id: str | None

    @computed_field(  # type: ignore[prop-decorator]
        description="The person's objection that this break-glass permit overrode"
    )
    @property
    def objection_overridden(self) -> str | None:
        # a permit names a restriction only when its break-glass overrode an objection
        return self.restriction_id if self.decision == "permit" else None


class AuditDecisionOut(_NamesOverriddenObjection, AuditRecord):
    """An audit row: what was recorded (app/audit/record.py), where it sits in the chain."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    reason: ReasonCode  # every recorded reason is one of the engine's codes
    seq: int
    chain_version: int = Field(description="Which columns row_hash covers (docs/audit.md)")
    prev_hash: str
    row_hash: str


EXPORT_COLUMNS = (*AuditDecisionOut.model_fields, *AuditDecisionOut.model_computed_fields)


class AuditPage(BaseModel):
    items: list[AuditDecisionOut]
    next_cursor: str | None


class AuditFilterParams(BaseModel):
    """The search filters, shared by search, export and the console."""

    model_config = ConfigDict(populate_by_name=True)

    person: PersonId | None = None
    requester: VocabularyName | None = None
    holder: VocabularyName | None = None
    client: EntryId | None = None
    user: ShortText | None = None
    case_ref: ShortText | None = None
    field: VocabularyName | None = Field(
        default=None, description="A field and every field under it"
    )
    purpose: VocabularyName | None = Field(
        default=None, description="A purpose and every purpose under it"
    )
    decision: Literal["permit", "deny"] | None = None
    reason: ReasonCode | None = None
    agreement: VocabularyName | None = None
    break_glass: bool | None = None
    decided_from: UtcDatetime | None = Field(default=None, alias="from")
    decided_until: UtcDatetime | None = Field(default=None, alias="to")

    def to_filter(self, vocabulary: Vocabulary) -> queries.AuditFilter:
        """The filter, once every agency, field and purpose named is in the vocabulary: a
        misspelt name would otherwise answer "no decisions", a wrong answer (422)."""
        vocabulary.refuse_unknown(
            (
                ("requester", self.requester, "agency"),
                ("holder", self.holder, "agency"),
                ("field", self.field, "field"),
                ("purpose", self.purpose, "purpose"),
            )
        )

        def with_descendants(name: str | None, tree: Tree) -> frozenset[str] | None:
            return None if name is None else tree.descendants[name]

        return queries.AuditFilter(
            person_id=self.person,
            requester=self.requester,
            holder=self.holder,
            client=self.client,
            user_ref=self.user,
            case_ref=self.case_ref,
            fields=with_descendants(self.field, vocabulary.fields),
            purposes=with_descendants(self.purpose, vocabulary.purposes),
            decision=self.decision,
            reason=self.reason,
            agreement_id=self.agreement,
            break_glass=self.break_glass,
            decided_from=self.decided_from,
            decided_until=self.decided_until,
        )


def audit_filter(live: Live, params: Annotated[AuditFilterParams, Query()]) -> queries.AuditFilter:
    return params.to_filter(live.current.vocabulary)


Filter = Annotated[queries.AuditFilter, Depends(audit_filter)]


@router.get("/decisions", responses={422: {"model": Problem}})
def search_decisions(
    session: DbSession,
    caller: Auditor,
    where: Filter,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    """Decisions matching every filter given, newest first, a page at a time."""
    rows, next_cursor = queries.search_decisions(session, where=where, limit=limit, cursor=cursor)
    return AuditPage(
        items=[AuditDecisionOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text that begins as a formula would (`=`,
    `+`, `-`, `@`, a tab or a carriage return) gets a leading `'` (OWASP's CSV injection
    rule). `user` and `case_ref` come from any partner system."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_cell(value: object) -> object:
    """One CSV cell: nothing for null; a list joined by `;`, obligations as `field=mask`."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(f"{o['field']}={o['mask']}" if isinstance(o, dict) else o for o in value)
    return spreadsheet_safe(value)


def _csv_lines(rows: Iterator[AuditDecision]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        out = AuditDecisionOut.model_validate(row).model_dump(mode="json")
        writer.writerow([_csv_cell(out[column]) for column in EXPORT_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _ndjson_lines(rows: Iterator[AuditDecision]) -> Iterator[bytes]:
    for row in rows:
        yield orjson.dumps(AuditDecisionOut.model_validate(row).model_dump(mode="json")) + b"\n"


@router.get(
    "/decisions/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {}, "application/x-ndjson": {}},
            "description": "Every matching decision, oldest first, streamed",
        },
        422: {"model": Problem},
    },
)
def export_decisions(
    request: Request,
    caller: Auditor,
    where: Filter,
    format: Annotated[Literal["csv", "ndjson"], Query()] = "ndjson",
) -> StreamingResponse:
    """Every matching decision as CSV or NDJSON, streamed in constant memory."""
    rows = queries.stream_decisions(request.app.state.engine, where=where)
    if format == "csv":
        return StreamingResponse(
            _csv_lines(rows),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="decisions.csv"'},
        )
    return StreamingResponse(_ndjson_lines(rows), media_type="application/x-ndjson")


@router.get("/decisions/{decision_id}", responses={404: {"model": Problem}})
def get_decision(session: DbSession, caller: Auditor, decision_id: DecisionId) -> AuditDecisionOut:
    """One recorded decision."""
    return AuditDecisionOut.model_validate(queries.get_decision(session, decision_id))


class DisclosureOut(_NamesOverriddenObjection):
    decision_id: str
    decided_at: datetime
    holder: str
    field: str
    decision: Literal["permit", "deny"]
    reason: ReasonCode
    agreement_id: str | None
    agreement_version: int | None
    restriction_id: str | None
    break_glass: bool
    user_ref: str | None
    case_ref: str | None
    obligations: list[RecordedObligation] | None = Field(
        description="What the permit was given on, e.g. an address masked to its district; "
        "null on rows recorded before obligations were"
    )


class DisclosureGroupOut(BaseModel):
    requester: str
    purpose: str
    decisions: int
    permitted: int
    first_at: datetime
    last_at: datetime
    fields_permitted: list[str]
    items: list[DisclosureOut]


class SubjectAccessReport(BaseModel):
    person_id: str
    generated_at: datetime
    decisions: int
    groups: list[DisclosureGroupOut]


def build_subject_access(request: Request, person_id: str) -> SubjectAccessReport:
    groups = queries.subject_access(request.app.state.engine, person_id)
    return SubjectAccessReport(
        person_id=person_id,
        generated_at=datetime.now().astimezone(),
        decisions=sum(len(group.decisions) for group in groups),
        groups=[
            DisclosureGroupOut(
                requester=group.requester,
                purpose=group.purpose,
                decisions=len(group.decisions),
                permitted=group.permitted,
                first_at=group.decisions[0].decided_at,
                last_at=group.decisions[-1].decided_at,
                fields_permitted=sorted(
                    {row.field for row in group.decisions if row.decision == "permit"}
                ),
                items=[
                    DisclosureOut.model_validate(row, from_attributes=True)
                    for row in group.decisions
                ],
            )
            for group in groups
        ],
    )


@router.get(f"/subject-access/{{person_id:{REST}}}", responses={422: {"model": Problem}})
def subject_access(
    request: Request, caller: Auditor, person_id: Annotated[PersonId, Path()]
) -> SubjectAccessReport:
    """Who asked for this person's data, when, why and with what outcome (console: printable)."""
    return build_subject_access(request, person_id)


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    outcome: str
    note: str
    reviewer: str = Field(description="The person who reviewed")
    client: str | None = Field(
        description="The API client that sent the review; null on reviews recorded before "
        "reviewers were named, whose `reviewer` is then that client"
    )
    reviewed_at: datetime


class QueueEntryOut(BaseModel):
    decision: AuditDecisionOut
    reviews: list[ReviewOut]
    overdue: bool


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: reviews.Outcome
    note: LongText
    reviewer: PersonName = Field(
        description="Who reviewed: a person's name or staff id, not a system (required)"
    )


@router.get("/break-glass", responses={422: {"model": Problem}})
def break_glass_queue(
    session: DbSession,
    caller: Auditor,
    settings: AppSettings,
    now: Now,
    status: Annotated[reviews.QueueStatus, Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[QueueEntryOut]:
    """Break-glass permits with their reviews: those awaiting review (`pending`) or `all`,
    oldest first, or those `reviewed`, newest first."""
    entries = reviews.review_queue(
        session,
        status=status,
        overdue_after=timedelta(days=settings.break_glass_review_days),
        limit=limit,
        now=now,
    )
    return [
        QueueEntryOut(
            decision=AuditDecisionOut.model_validate(entry.decision),
            reviews=[ReviewOut.model_validate(review) for review in entry.reviews],
            overdue=entry.overdue,
        )
        for entry in entries
    ]


@router.post(
    "/break-glass/{decision_id}/reviews",
    status_code=201,
    responses={404: {"model": Problem}, 409: {"model": Problem}, 422: {"model": Problem}},
)
def review_break_glass(
    body: ReviewIn, session: DbSession, caller: Auditor, decision_id: DecisionId, now: Now
) -> ReviewOut:
    """Record an auditor's outcome for one break-glass permit (append-only)."""
    review = reviews.record_review(
        session,
        decision_id=decision_id,
        outcome=body.outcome,
        note=body.note,
        reviewer=body.reviewer,
        client=caller.client_id,
        now=now,
    )
    out = ReviewOut.model_validate(review)
    session.commit()
    return out


class BrokenLinkOut(BaseModel):
    seq: int
    decision_id: str | None
    problem: str


class VerificationOut(BaseModel):
    intact: bool
    rows_checked: int
    last_seq: int
    broken: BrokenLinkOut | None = Field(description="The first broken link, if any")
    signed_by: list[str] = Field(
        description="The ids of the keys the head's and checkpoints' signatures were checked "
        "with; empty when this deployment runs unsigned (development only)"
    )


@router.get("/verify")
def verify(request: Request, caller: Auditor) -> VerificationOut:
    """Walk the hash chain from its first row, or a signed purge checkpoint, to the signed
    head, checking every signature with this replica's signing key."""
    signer: AuditSigner | None = request.app.state.audit_signer
    with request.app.state.engine.connect() as connection:
        result = verify_chain(connection, None if signer is None else signer.keyring())
    return VerificationOut(
        intact=result.intact,
        rows_checked=result.rows_checked,
        last_seq=result.last_seq,
        broken=None if result.broken is None else BrokenLinkOut(**vars(result.broken)),
        signed_by=list(result.signed_by),
    )


class ChainHeadOut(BaseModel):
    """The chain head as a witness keeps it, one JSON line at a time, outside the database."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "seq": 1048576,
                    "hash": "9f2c6a0d3b1e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
                    "decision_id": "54c4fc90-41ce-43bd-b4c8-301869830b2c",
                    "read_at": "2026-11-25T09:40:00Z",
                    "signature": "ed25519:94db081fc5b1fb21:3q2+7w...",
                }
            ]
        }
    )

    seq: int = Field(description="The newest audit row's seq")
    hash: str = Field(description="Its row_hash, which commits to every row before it")
    decision_id: str | None = Field(description="Its decision; null once a purge removed it")
    read_at: datetime
    signature: str | None = Field(
        description="`ed25519:<key id>:<base64>` over the text `accord audit head v1 <seq> "
        "<hash>`; null at the genesis or when the deployment runs unsigned"
    )

    @classmethod
    def read(cls, connection: Connection, now: datetime) -> ChainHeadOut:
        head = read_head(connection)
        return cls(
            seq=head.seq,
            hash=head.hash,
            decision_id=head_decision_id(connection, head),
            read_at=now,
            signature=head.signature,
        )


@router.get("/head")
def chain_head(request: Request, caller: Auditor, now: Now) -> ChainHeadOut:
    """The signed chain head, for an outside witness to keep: `accord audit verify --head`
    later proves that nothing up to it changed."""
    with request.app.state.engine.connect() as connection:
        return ChainHeadOut.read(connection, now)
