"""Prometheus metrics. With several workers, prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `accord serve --workers N`) sums them across processes.
Break-glass queue gauges are read from the database at scrape time, so every
replica reports the same truth; with the database down they are left out and
the rest of the scrape is still served.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.audit.reviews import queue_counts

log = structlog.get_logger(__name__)

DECISIONS = Counter(
    "accord_decisions", "Field decisions answered", ["decision", "reason", "purpose"]
)
DECISION_SECONDS = Histogram(
    "accord_decision_seconds",
    "Time to answer a decision request",
    ["stage"],  # evaluate | end_to_end
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
AUDIT_BATCH_ROWS = Histogram(
    "accord_audit_batch_rows",
    "Rows per audit group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
AUDIT_COMMIT_SECONDS = Histogram(
    "accord_audit_commit_seconds",
    "Time to commit one audit batch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
AUDIT_FAILURES = Counter("accord_audit_commit_failures", "Audit commits that failed")
POLICY_REVISION = Gauge(
    "accord_policy_revision", "Policy revision this process decides with", multiprocess_mode="max"
)
POLICY_RELOAD_SECONDS = Histogram(
    "accord_policy_reload_seconds", "Time to load and compile a policy revision"
)
POLICY_RELOAD_FAILURES = Counter(
    "accord_policy_reload_failures", "Policy revisions that failed to load or compile"
)
PERSON_INFO_CALLS = Counter(
    "accord_person_info_calls", "Calls to the person-information service", ["result"]
)


class BreakGlassQueue(Collector):
    """Pending and overdue break-glass reviews, counted in the database when scraped."""

    def __init__(self, engine: Engine, overdue_after: timedelta) -> None:
        self._engine = engine
        self._overdue_after = overdue_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self._engine.connect() as connection:
                pending, overdue = queue_counts(connection, overdue_after=self._overdue_after)
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


def render(engine: Engine, overdue_after: timedelta) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        process_metrics = CollectorRegistry()
        multiprocess.MultiProcessCollector(process_metrics)  # type: ignore[no-untyped-call]
    else:
        process_metrics = REGISTRY
    queue = CollectorRegistry()
    queue.register(BreakGlassQueue(engine, overdue_after))
    return generate_latest(process_metrics) + generate_latest(queue), CONTENT_TYPE_LATEST
