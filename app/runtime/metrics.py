"""Prometheus metrics. With several workers, prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `accord serve --workers N`) sums them across processes.
Gauges counted in the database (the break-glass queue, app/audit/reviews.py)
are read at scrape time, so every replica reports the same truth.
"""

from __future__ import annotations

import functools
import os

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
from prometheus_client.registry import Collector

DECISIONS = Counter(
    "accord_decisions", "Field decisions answered", ["decision", "reason", "purpose"]
)
DECISION_SECONDS = Histogram(
    "accord_decision_seconds",
    "Time to answer a decision request",
    ["stage"],  # evaluate | end_to_end
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Labelled once: `labels()` is a lookup under a lock, on every decision.
EVALUATE_SECONDS = DECISION_SECONDS.labels(stage="evaluate")
END_TO_END_SECONDS = DECISION_SECONDS.labels(stage="end_to_end")


@functools.lru_cache(maxsize=4096)  # outcomes x reasons x the vocabulary's purposes
def decisions_answered(decision: str, reason: str, purpose: str) -> Counter:
    """DECISIONS for one (decision, reason, purpose), labelled once."""
    return DECISIONS.labels(decision=decision, reason=reason, purpose=purpose)


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
POLICY_COMPILES = Counter(
    "accord_policy_compiles", "Policy revisions this process compiled, successfully or not"
)
CLIENT_REVISION = Gauge(
    "accord_client_revision",
    "Client revision whose API keys this process accepts",
    multiprocess_mode="max",
)
REGISTER_SEQ = Gauge(
    "accord_register_seq",
    "The last register change this process applied (the register feed's number)",
    multiprocess_mode="max",
)
REGISTER_CHANGES_APPLIED = Counter(
    "accord_register_changes_applied", "Register changes this process applied from the feed"
)
POLICY_RELOAD_FAILURES = Counter(
    "accord_policy_reload_failures", "Policy revisions that failed to load or compile"
)
PERSON_INFO_CALLS = Counter(
    "accord_person_info_calls", "Calls to the person-information service", ["result"]
)
CLIENT_LIMIT_REFUSALS = Counter(
    "accord_client_limit_refusals",
    "Requests refused (429) because their API client was over a limit",
    ["client", "limit"],  # limit: rate | concurrency
)

HTTP_REQUESTS = Counter(
    "accord_http_requests",
    "HTTP requests answered",
    ["method", "route", "status"],  # route: the path template, or "unmatched"
)
HTTP_REQUEST_SECONDS = Histogram(
    "accord_http_request_seconds",
    "Time to answer an HTTP request, from its first byte to the end of the answer",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


@functools.lru_cache(maxsize=4096)  # methods x the app's route templates x statuses
def http_answered(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """HTTP_REQUESTS and HTTP_REQUEST_SECONDS for one (method, route, status), labelled once."""
    labels = {"method": method, "route": route, "status": str(status)}
    return HTTP_REQUESTS.labels(**labels), HTTP_REQUEST_SECONDS.labels(**labels)


def render(*database_gauges: Collector) -> tuple[bytes, str]:
    """This process's metrics (or every worker's, summed), then gauges read at scrape time."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        process_metrics = CollectorRegistry()
        multiprocess.MultiProcessCollector(process_metrics)  # type: ignore[no-untyped-call]
    else:
        process_metrics = REGISTRY
    gauges = CollectorRegistry()
    for collector in database_gauges:
        gauges.register(collector)
    return generate_latest(process_metrics) + generate_latest(gauges), CONTENT_TYPE_LATEST
