"""HTTP for auditors (scope `audit`): search, export, subject access, break-glass review, verify."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

import orjson
import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from app.audit import fhir, queries, reviews, stream
from app.audit.integrity import head_decision_id, read_head, verify_chain
from app.audit.record import AuditRecord, RecordedObligation
from app.audit.signing import AuditSigner
from app.decision.reasons import ReasonCode
from app.policy.vocabulary import Tree, Vocabulary
from app.runtime.clock import Clock
from app.runtime.live_policy import LivePolicy
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

log = structlog.get_logger(__name__)
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


def ndjson_line(row: AuditDecision) -> bytes:
    """One audit row as an NDJSON line, as the export, the stream and `accord audit tail`
    give it: the fields of the search API's decision."""
    return orjson.dumps(AuditDecisionOut.model_validate(row).model_dump(mode="json")) + b"\n"


def _ndjson_lines(rows: Iterator[AuditDecision]) -> Iterator[bytes]:
    for row in rows:
        yield ndjson_line(row)


@router.get(
    "/decisions/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {},
                "application/x-ndjson": {},
                fhir.MEDIA_TYPE: {
                    "schema": {
                        "type": "object",
                        "description": "With format=fhir: a FHIR R4 Bundle (type searchset) "
                        "of one AuditEvent a decision; the mapping is in docs/audit.md",
                    }
                },
            },
            "description": "Every matching decision, oldest first, streamed",
        },
        422: {"model": Problem},
    },
)
def export_decisions(
    request: Request,
    caller: Auditor,
    where: Filter,
    format: Annotated[Literal["csv", "ndjson", "fhir"], Query()] = "ndjson",
) -> StreamingResponse:
    """Every matching decision as CSV, NDJSON or a FHIR R4 Bundle of AuditEvents, streamed
    in constant memory."""
    rows = queries.stream_decisions(request.app.state.engine, where=where)
    if format == "csv":
        return StreamingResponse(
            _csv_lines(rows),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="decisions.csv"'},
        )
    if format == "fhir":
        live: LivePolicy = request.app.state.live
        clock: Clock = request.app.state.clock
        return StreamingResponse(
            fhir.bundle(rows, live.current.vocabulary, self_url=str(request.url), now=clock.now()),
            media_type=f"{fhir.MEDIA_TYPE}; fhirVersion={fhir.FHIR_VERSION}",
        )
    return StreamingResponse(_ndjson_lines(rows), media_type="application/x-ndjson")


MAX_SEQ = 2**63 - 1
# Each line as it is written: no cache keeps it, and nginx (X-Accel-Buffering) passes it on
# at once instead of buffering the response.
STREAM_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}
STREAM_EXAMPLE = {
    "decision_id": "54c4fc90-41ce-43bd-b4c8-301869830b2c",
    "request_id": "5f0c2d7e9a1b4c3d",
    "decided_at": "2026-11-25T09:38:29.550198Z",
    "client": "riverton-case-system",
    "requester": "la.riverton.childrens-services",
    "holder": "police.riverton",
    "person_id": "P-1001",
    "field": "criminal.convictions",
    "purpose": "safeguarding.children",
    "decision": "permit",
    "reason": "agreement",
    "agreement_id": "isa-riverton-mash",
    "agreement_version": 1,
    "restriction_id": None,
    "consent_id": None,
    "break_glass": False,
    "justification": None,
    "user_ref": "sw.jones",
    "case_ref": "CP-2026-114",
    "policy_revision": 5,
    "obligations": [],
    "routes_offered": [],
    "seq": 1048576,
    "chain_version": 2,
    "prev_hash": "3c1d0b2a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4",
    "row_hash": "9f2c6a0d3b1e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
    "objection_overridden": None,
}


def _lines_after(engine: Engine, after: int) -> tuple[bytes, int, bool]:
    """The NDJSON lines of the next rows after seq `after`, the last seq among them (or
    `after`), and whether more may be waiting (the read was full)."""
    rows = queries.decisions_after(engine, after=after)
    last = rows[-1].seq if rows else after
    return b"".join(ndjson_line(row) for row in rows), last, len(rows) == queries.FOLLOW_BATCH


async def _follow(engine: Engine, first: tuple[bytes, int, bool]) -> AsyncIterator[bytes]:
    """The trail as it grows from a first read (`_lines_after`): rows as they commit, a
    keep-alive line after stream.KEEPALIVE_SECONDS of silence. Reads run in a worker
    thread, never on the event loop.

    Ends when the server is shutting down or the database cannot be read; the client
    leaving cancels it (Starlette listens for the disconnect)."""
    lines, after, more = first
    quiet_since = time.monotonic()
    while True:
        if lines:
            yield lines
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= stream.KEEPALIVE_SECONDS:
            yield stream.KEEPALIVE
            quiet_since = time.monotonic()
        if stream.shutting_down():
            return
        if not more:
            await asyncio.sleep(stream.POLL_SECONDS)
        try:
            lines, after, more = await asyncio.to_thread(_lines_after, engine, after)
        except OperationalError as exc:  # the consumer resumes from its last seq
            log.warning("audit stream ended: database unavailable", error=str(exc.orig or exc))
            return


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "One audit row a line, as in the export (the fields "
                        "of AuditDecisionOut), in seq order; an empty line is a keep-alive",
                    },
                    "example": orjson.dumps(STREAM_EXAMPLE).decode(),
                }
            },
            "description": "The audit rows after `after`, then each new one as it is "
            "committed; the response stays open (chunked)",
        },
        422: {"model": Problem},
    },
)
async def stream_audit(
    request: Request,
    caller: Auditor,
    after: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_SEQ,
            description="Send the rows after this seq (0: from the first); to resume, the "
            "last seq received",
        ),
    ] = 0,
) -> StreamingResponse:
    """Follow the audit trail, for a SIEM: every row after `after` in seq order, then each
    new row as it commits, as NDJSON, with an empty line after 15 s of silence (skip it).
    Delivery is at least once: resume with `after` set to the last seq you hold and drop
    any seq you have already."""
    engine: Engine = request.app.state.engine
    stream.watch_shutdown()
    # The first read before answering: a database that cannot be read is a 503, not a 200
    # that ends at once.
    first = await asyncio.to_thread(_lines_after, engine, after)
    return StreamingResponse(
        _follow(engine, first),
        media_type="application/x-ndjson",
        headers=STREAM_HEADERS,
    )


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
