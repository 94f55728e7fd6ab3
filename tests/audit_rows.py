"""Audit rows for tests that need many, chained through the real group-commit writer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select

from app.audit.record import AuditRecord
from app.audit.writer import AuditWriter
from app.store.database import make_engine
from app.store.tables import AuditDecision
from tests.conftest import AUDIT_SIGNER


def _record(at: datetime, n: int) -> AuditRecord:
    return AuditRecord(
        decision_id=str(uuid.uuid4()),
        request_id=f"seed-{n}",
        decided_at=at,
        client="seed",
        requester="la.blackpool.childrens-services",
        holder="police.lancashire",
        person_id=f"P-SEED-{n % 50}",
        field="identity.name",
        purpose="safeguarding.children",
        decision="permit" if n % 2 else "deny",
        reason="agreement" if n % 2 else "subject-condition-not-met",
        agreement_id="isa-blackpool-mash",
        agreement_version=1,
        restriction_id=None,
        consent_id=None,
        break_glass=False,
        justification=None,
        user_ref="sw.ahmed",
        case_ref=None,
        policy_revision=1,
        obligations=[],
        routes_offered=[],
    )


def write_rows(engine: Engine, moments: list[datetime]) -> None:
    """One row decided at each moment, written and chained as the service writes them."""
    writer = AuditWriter(engine, signer=AUDIT_SIGNER, max_batch_rows=1000, timeout_seconds=120)
    writer.start()
    try:
        asyncio.run(writer.write([_record(at, n).model_dump() for n, at in enumerate(moments)]))
    finally:
        writer.stop()


def recorded_decision_ids(database_url: str, decision_ids: Sequence[str | None]) -> set[str]:
    """Which of these decision ids have their row in the audit table."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    select(AuditDecision.decision_id).where(
                        AuditDecision.decision_id.in_(decision_ids)
                    )
                )
            )
    finally:
        engine.dispose()
