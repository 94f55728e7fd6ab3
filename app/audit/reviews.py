"""Break-glass review: every emergency permit waits for an auditor's outcome.

Reviews are their own append-only records; a decision is pending until it has
one, and overdue when it has waited longer than the configured number of days.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, Engine, and_, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.runtime.clock import Clock
from app.store.tables import AuditDecision, BreakGlassReview

log = structlog.get_logger(__name__)
Outcome = Literal["justified", "not-justified"]
QueueStatus = Literal["pending", "reviewed", "all"]


@dataclass(frozen=True)
class QueueEntry:
    decision: AuditDecision
    reviews: list[BreakGlassReview]
    overdue: bool


def _break_glass_permits() -> ColumnElement[bool]:
    return and_(AuditDecision.break_glass.is_(True), AuditDecision.decision == "permit")


def review_queue(
    session: Session, *, status: QueueStatus, overdue_after: timedelta, limit: int, now: datetime
) -> list[QueueEntry]:
    """Break-glass permits with their reviews: those awaiting review or all, oldest first
    (a queue), or those reviewed, newest first (a history)."""
    reviewed = select(BreakGlassReview.decision_id)
    query = select(AuditDecision).where(_break_glass_permits())
    if status == "pending":
        query = query.where(AuditDecision.decision_id.not_in(reviewed))
    elif status == "reviewed":
        query = query.where(AuditDecision.decision_id.in_(reviewed))
    order = AuditDecision.seq.desc() if status == "reviewed" else AuditDecision.seq.asc()
    rows = list(session.scalars(query.order_by(order).limit(limit)))
    reviews = reviews_of(session, [row.decision_id for row in rows])
    cutoff = now - overdue_after
    return [
        QueueEntry(
            decision=row,
            reviews=reviews[row.decision_id],
            overdue=not reviews[row.decision_id] and row.decided_at < cutoff,
        )
        for row in rows
    ]


def reviews_of(session: Session, decision_ids: list[str]) -> dict[str, list[BreakGlassReview]]:
    """The reviews of each decision named, oldest first ([] for one with none)."""
    found: dict[str, list[BreakGlassReview]] = {decision_id: [] for decision_id in decision_ids}
    for review in session.scalars(
        select(BreakGlassReview)
        .where(BreakGlassReview.decision_id.in_(decision_ids))
        .order_by(BreakGlassReview.id)
    ):
        found[review.decision_id].append(review)
    return found


def record_review(
    session: Session,
    *,
    decision_id: str,
    outcome: Outcome,
    note: str,
    reviewer: str,
    client: str,
    now: datetime,
) -> BreakGlassReview:
    """Record `reviewer`'s (a person's) outcome for a break-glass permit, sent by `client`."""
    decision = session.scalars(
        select(AuditDecision).where(AuditDecision.decision_id == decision_id)
    ).one_or_none()
    if decision is None:
        raise NotFound(f"no decision '{decision_id}'")
    if not (decision.break_glass and decision.decision == "permit"):
        raise Conflict(f"decision '{decision_id}' was not a break-glass permit")
    review = BreakGlassReview(
        decision_id=decision_id,
        outcome=outcome,
        note=note,
        reviewer=reviewer,
        client=client,
        reviewed_at=now,
    )
    session.add(review)
    session.flush()
    return review


def queue_counts(
    connection: Connection, *, overdue_after: timedelta, now: datetime
) -> tuple[int, int]:
    """(pending, overdue) break-glass reviews."""
    pending = (
        select(AuditDecision.decided_at)
        .where(_break_glass_permits())
        .where(AuditDecision.decision_id.not_in(select(BreakGlassReview.decision_id)))
        .subquery()
    )
    cutoff = now - overdue_after
    total, overdue = connection.execute(
        select(
            func.count(),
            func.count().filter(pending.c.decided_at < cutoff),
        ).select_from(pending)
    ).one()
    return int(total), int(overdue)


class BreakGlassQueue(Collector):
    """Pending and overdue break-glass reviews, counted in the database when scraped."""

    def __init__(self, engine: Engine, overdue_after: timedelta, clock: Clock) -> None:
        self._engine = engine
        self._overdue_after = overdue_after
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self._engine.connect() as connection:
                pending, overdue = queue_counts(
                    connection, overdue_after=self._overdue_after, now=self._clock.now()
                )
        except SQLAlchemyError as exc:  # the rest of the scrape still matters most then
            log.error("break-glass queue not counted", error=str(exc))
            return
        yield GaugeMetricFamily(
            "accord_break_glass_reviews_pending", "Break-glass permits awaiting review", pending
        )
        yield GaugeMetricFamily(
            "accord_break_glass_reviews_overdue",
            "Break-glass permits awaiting review longer than ACCORD_BREAK_GLASS_REVIEW_DAYS",
            overdue,
        )
