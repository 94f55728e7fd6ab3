"""OpenTelemetry traces of every request, exported over OTLP/HTTP, without a person's data.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then
nothing is installed and a request costs nothing more. On, opentelemetry-instrumentation-
fastapi wraps the app (FastAPIInstrumentor.instrument_app) with a tracer provider of its own
(not the global one), and a BatchSpanProcessor hands spans to the OTLP/HTTP exporter, which
reads the standard OTEL_EXPORTER_OTLP_* variables. The decision routes add the decision ids
and the policy revision to their request's span (`accord.decision_ids`,
`accord.policy_revision`, app/decision/router.py).

A person's data never leaves in a span. A span is named by its route's template
(`GET /v1/audit/subject-access/{person_id}`), and before export every span keeps only the
attributes in ALLOWED_ATTRIBUTES (and `accord.*`): the instrumentation's raw path, URL and
query string (`http.target`, `http.url`, `url.path`, `url.query`, `url.full`), which carry
person ids, and any captured header (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*) are
dropped, as are exception messages (the log line of an unhandled error has them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from fastapi import FastAPI
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.util.types import Attributes, AttributeValue

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The attributes a span may leave with: the request's shape, never its path or query.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "http.route",
        "http.method",
        "http.request.method",
        "http.status_code",
        "http.response.status_code",
        "error.type",
        "http.scheme",
        "url.scheme",
        "http.flavor",
        "network.protocol.version",
        "http.host",
        "http.server_name",
        "server.address",
        "server.port",
        "net.host.port",
        "net.peer.ip",
        "net.peer.port",
        "client.address",
        "client.port",
        "http.user_agent",
        "user_agent.original",
        "user_agent.synthetic.type",
        "exception.type",
        "exception.escaped",
    }
)
ACCORD_PREFIX = "accord."
CONVERTER = re.compile(r"\{(\w+):[^}]*\}")  # `{person_id:rest}` is named `{person_id}`
# Probes and scrapes are not traced, unless OTEL_PYTHON_(FASTAPI_)EXCLUDED_URLS says otherwise.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"


def tracing_configured() -> bool:
    """Whether an OTLP endpoint is configured, so tracing is on."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def instrument(app: FastAPI, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Trace `app`'s requests to `exporter` (by default OTLP/HTTP, if an endpoint is
    configured). Returns the provider, to shut down at exit; None: nothing installed."""
    if exporter is None:
        if not tracing_configured():
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "accord"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(RedactingExporter(exporter)))
    excluded = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    )
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=excluded or EXCLUDED_URLS,
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
    )
    return provider


def _allowed(attributes: Attributes) -> dict[str, AttributeValue]:
    kept = {
        key: value
        for key, value in (attributes or {}).items()
        if key in ALLOWED_ATTRIBUTES or key.startswith(ACCORD_PREFIX)
    }
    if isinstance(route := kept.get("http.route"), str):
        kept["http.route"] = CONVERTER.sub(r"{\1}", route)
    return kept


class RedactingExporter(SpanExporter):
    """Hands `exporter` each span with only its allowed attributes, and its events' (an
    exception's type, not its message); a span's status loses its description, and its name
    and route their path convertors, as OpenAPI names the route. Runs on the batch
    processor's thread, not the request's."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    @staticmethod
    def _redacted(span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=CONVERTER.sub(r"{\1}", span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=_allowed(span.attributes),
            events=[
                Event(event.name, _allowed(event.attributes), event.timestamp)
                for event in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=Status(span.status.status_code),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
