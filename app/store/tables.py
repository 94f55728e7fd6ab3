"""Accord's tables. The schema is created and changed only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class utc_second_text(FunctionElement[str]):
    """A UTCDateTime column as ISO-8601 text to the second, made by the database:
    `2026-12-01T09:30:00Z` (NULL stays NULL), as app/policy/lines.casbin_time writes it.

    A replica reads a million register entries' times so, with no datetime made.
    """

    type = String()
    inherit_cache = True


@compiles(utc_second_text, "sqlite")
def _utc_second_text_sqlite(element: utc_second_text, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps the UTC moment as text, 'YYYY-MM-DD HH:MM:SS.ffffff'
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {compiler.process(element.clauses, **kw)})"


@compiles(utc_second_text, "postgresql")
def _utc_second_text_postgresql(element: utc_second_text, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


# SQLite only auto-increments an INTEGER PRIMARY KEY.
SequenceNumber = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class PolicyState(Base):
    """One row: the policy revision, bumped by every agreement change."""

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime]


class ClientState(Base):
    """One row: the client revision, bumped by every API client created or revoked.

    Apart from the policy revision, so a key change reloads the callers and
    compiles nothing.
    """

    __tablename__ = "client_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime]


class RegisterState(Base):
    """One row: the number of the register change feed's last change.

    A register write bumps it first: its row lock orders the feed's numbers as
    the writes commit, so a replica that has read up to N has seen every change
    numbered N or less.
    """

    __tablename__ = "register_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime]


class RegisterChange(Base):
    """One register entry written (recorded, replaced or removed), in commit order."""

    __tablename__ = "register_changes"

    seq: Mapped[int] = mapped_column(SequenceNumber, primary_key=True, autoincrement=False)
    entry_id: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime]


class AgreementVersion(Base):
    """An immutable version of an agreement document; the highest version is current."""

    __tablename__ = "agreement_versions"

    agreement_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    change: Mapped[str] = mapped_column(String(16))  # created | revised | activated | ...
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class AgreementApproval(Base):
    """A named signatory's approval, for one party agency, of one agreement version;
    append-only (ACCORD_REQUIRE_SIGNOFF)."""

    __tablename__ = "agreement_approvals"
    __table_args__ = (
        UniqueConstraint("agreement_id", "version", "agency"),
        ForeignKeyConstraint(
            ["agreement_id", "version"],
            ["agreement_versions.agreement_id", "agreement_versions.version"],
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    agency: Mapped[str] = mapped_column(String(128))
    signatory: Mapped[str] = mapped_column(String(128))  # the person who signed for the agency
    client: Mapped[str] = mapped_column(String(128))  # the API client that sent the approval
    note: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime]


class RegisterEntry(Base):
    """A restriction or consent the data controller recorded about one person."""

    __tablename__ = "register_entries"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # sealed | objection | consent
    recipients: Mapped[list[str] | None] = mapped_column(JSON)
    fields: Mapped[list[str] | None] = mapped_column(JSON)
    purposes: Mapped[list[str] | None] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    until: Mapped[datetime | None]
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime]
    removed_by: Mapped[str | None] = mapped_column(String(128))
    removed_at: Mapped[datetime | None]


class AuditDecision(Base):
    """One field decision, written before its answer is sent."""

    __tablename__ = "audit_decisions"
    __table_args__ = (
        Index("ix_audit_decisions_person_seq", "person_id", "seq"),
        Index("ix_audit_decisions_requester_seq", "requester", "seq"),
        Index("ix_audit_decisions_holder_seq", "holder", "seq"),
        # BRIN on PostgreSQL: rows arrive in time order (migration 0011)
        Index("ix_audit_decisions_decided_at", "decided_at", postgresql_using="brin"),
        # Partial: each decision writes as few B-trees as it can (migration 0011).
        Index(
            "ix_audit_decisions_case_ref_seq",
            "case_ref",
            "seq",
            sqlite_where=text("case_ref IS NOT NULL"),
            postgresql_where=text("case_ref IS NOT NULL"),
        ),
        Index(
            "ix_audit_decisions_break_glass_seq",
            "seq",
            sqlite_where=text("break_glass IS 1"),
            postgresql_where=text("break_glass IS true"),
        ),
    )

    # Assigned by the writer from the chain head, so seq order is commit order. On
    # PostgreSQL the table is partitioned by month of decided_at (migration 0012): there
    # the primary key is (seq, decided_at) and decision_id is unique with decided_at.
    seq: Mapped[int] = mapped_column(SequenceNumber, primary_key=True, autoincrement=False)
    decision_id: Mapped[str] = mapped_column(String(36), unique=True)
    request_id: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime]
    client: Mapped[str] = mapped_column(String(128))
    requester: Mapped[str] = mapped_column(String(128))
    holder: Mapped[str] = mapped_column(String(128))
    person_id: Mapped[str] = mapped_column(String(128))
    field: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(40))
    agreement_id: Mapped[str | None] = mapped_column(String(128))
    agreement_version: Mapped[int | None] = mapped_column(Integer)
    restriction_id: Mapped[str | None] = mapped_column(String(128))
    consent_id: Mapped[str | None] = mapped_column(String(128))
    break_glass: Mapped[bool] = mapped_column(Boolean)
    justification: Mapped[str | None] = mapped_column(Text)
    user_ref: Mapped[str | None] = mapped_column(String(128))
    case_ref: Mapped[str | None] = mapped_column(String(128))
    policy_revision: Mapped[int] = mapped_column(Integer)
    obligations: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    routes_offered: Mapped[list[str] | None] = mapped_column(JSON)
    # Which columns row_hash covers (app/audit/chain.py): 1 before obligations were recorded.
    chain_version: Mapped[int] = mapped_column(Integer, server_default="1")
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row: the seq and hash of the newest audit row. Writers lock it to chain in order."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(SequenceNumber)
    last_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(160))  # over (last_seq, last_hash)


class AuditCheckpoint(Base):
    """What a purge removed: how many rows, up to the last removed row, whose hash commits
    to all before it; signed."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    purged_before: Mapped[datetime]
    last_seq: Mapped[int] = mapped_column(SequenceNumber)
    last_hash: Mapped[str] = mapped_column(String(64))
    rows_removed: Mapped[int] = mapped_column(SequenceNumber)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str | None] = mapped_column(String(160))  # over every column but id


class AuditVerification(Base):
    """A successful verification's record that the chain was proven up to row `last_seq`,
    whose hash `last_hash` commits to every row before it; signed (migration 0012).
    `accord audit verify --since-checkpoint` starts from the newest."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    last_seq: Mapped[int] = mapped_column(SequenceNumber)
    last_hash: Mapped[str] = mapped_column(String(64))
    rows_checked: Mapped[int] = mapped_column(SequenceNumber)
    verified_at: Mapped[datetime]
    verified_by: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str | None] = mapped_column(String(160))  # over every column but id


class BreakGlassReview(Base):
    """An auditor's outcome for one break-glass permit; append-only."""

    __tablename__ = "break_glass_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(String(36), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # justified | not-justified
    note: Mapped[str] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(128))  # the person who reviewed
    # the API client that sent the review; NULL before migration 0009 (reviewer was it)
    client: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime]


class ApiClient(Base):
    """A partner system or user agent: its scopes, its agencies and its hashed key."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    agencies: Mapped[list[str]] = mapped_column(JSON)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(128))


class ChangeRecord(Base):
    """One management action: who did what to which record, with before and after."""

    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_target", "target_type", "target_id", "seq"),)

    seq: Mapped[int] = mapped_column(SequenceNumber, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(40))
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
