"""Metrics and traces as operators use them: a keyless metrics port for every worker, a
`metrics` scope for the service's /metrics, HTTP metrics by route template, and
OpenTelemetry traces that carry decision ids but never a person's data."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.web.tracing import ENDPOINT_VARIABLES
from tests.conftest import (
    MASH_REQUEST,
    ProcessServer,
    Server,
    accord,
    create_key,
    free_port,
    import_agreements_from,
    scenario_env,
    settings_of,
    wait_until,
)

AGENCY = str(MASH_REQUEST["requester"])


def _sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent), or the sum over all its label sets if none
    are given."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _families(exposition: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(exposition)}


# -- the metrics port -----------------------------------------------------------------------


@pytest.mark.slow  # a real `accord serve`, for a real port and real worker processes
@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_port_serves_every_workers_metrics_without_a_key(
    database_url: str,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
    workers: int,
) -> None:
    metrics_port = free_port()
    server = process_server_factory(
        {
            **scenario_env(database_url),
            "ACCORD_WORKERS": str(workers),
            "ACCORD_METRICS_PORT": str(metrics_port),
        }
    )
    asked = 8
    with server.client() as api:
        for _ in range(asked):
            assert api.post("/v1/decisions", json=MASH_REQUEST).status_code == 200

    scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert scrape.status_code == 200, scrape.text
    assert scrape.headers["content-type"].startswith("text/plain")
    # Every decision, whichever worker answered it, is in the one scrape.
    assert _sample(scrape.text, "accord_decisions_total") == asked
    assert (
        _sample(
            scrape.text,
            "accord_http_requests_total",
            method="POST",
            route="/v1/decisions",
            status="200",
        )
        == asked
    )
    # The same families as the service's own /metrics, the database-read gauges included.
    service = server.get("/metrics")
    assert service.status_code == 200, service.text
    assert _families(scrape.text) == _families(service.text)
    assert "accord_break_glass_reviews_pending" in _families(scrape.text)
    # Only the metrics: the API is not reachable there without a key.
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/v1/vocabulary").status_code == 404


@pytest.mark.slow  # runs `accord serve`
def test_metrics_port_already_taken_stops_the_start(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**scenario_env(database_url), "ACCORD_METRICS_PORT": str(port)}
        result = accord("serve", "--port", str(free_port()), env=env, check=False)
    assert result.returncode == 2
    assert f"ACCORD_METRICS_PORT {port} cannot be bound on 127.0.0.1" in result.stderr


# -- the service's /metrics and the `metrics` scope ---------------------------------------------


def _metrics_key(env: dict[str, str], tmp_path: Path, server: Server) -> str:
    """A Prometheus key made as an operator would, once the server has picked it up."""
    key_file = tmp_path / "prometheus.key"
    accord(
        "clients",
        "create",
        "--id",
        f"prometheus-{uuid.uuid4().hex[:8]}",
        "--scopes",
        "metrics",
        "--agencies",
        AGENCY,
        "--key-file",
        str(key_file),
        env=env,
    )
    key = key_file.read_text().strip()
    assert wait_until(lambda: server.get("/metrics", key=key).status_code != 401, 5)
    return key


def test_service_metrics_need_the_metrics_scope_when_required(
    database_url: str, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    env = {**scenario_env(database_url), "ACCORD_REQUIRE_METRICS_SCOPE": "true"}
    server = server_factory(env)
    metrics_key = _metrics_key(env, tmp_path, server)

    refused = server.get("/metrics")  # every scope but `metrics`
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "metrics" in refused.json()["detail"]
    scraped = server.get("/metrics", key=metrics_key)
    assert scraped.status_code == 200
    assert "accord_decisions" in _families(scraped.text)  # the parser drops `_total`
    # A metrics key reads the metrics and nothing else.
    assert server.get("/v1/vocabulary", key=metrics_key).status_code == 403
    assert server.post("/v1/decisions", key=metrics_key, json=MASH_REQUEST).status_code == 403


def test_service_metrics_take_any_key_by_default(
    database_url: str, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    server = server_factory(env)
    metrics_key = _metrics_key(env, tmp_path, server)
    assert server.get("/metrics").status_code == 200  # as before the scope existed
    assert server.get("/metrics", key=metrics_key).status_code == 200
    assert server.get("/metrics", key=None).status_code == 401


# -- HTTP metrics ---------------------------------------------------------------------------


def test_http_metrics_are_labelled_by_route_template_never_the_path(
    database_url: str, server_factory: Callable[..., Server]
) -> None:
    server = server_factory(scenario_env(database_url))
    agreement_id = f"isa-probe-{uuid.uuid4().hex}"
    nowhere = f"/v1/nowhere-{uuid.uuid4().hex}"
    agreement = {"method": "GET", "route": "/v1/agreements/{agreement_id}", "status": "404"}
    decision = {"method": "POST", "route": "/v1/decisions", "status": "200"}
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    before = server.get("/metrics").text

    assert server.get(f"/v1/agreements/{agreement_id}").status_code == 404
    assert server.post("/v1/decisions", json=MASH_REQUEST).status_code == 200  # the fast path
    assert server.get(nowhere).status_code == 404

    after = server.get("/metrics").text
    for labels in (agreement, decision, unmatched):
        counted = _sample(after, "accord_http_requests_total", **labels)
        assert counted - _sample(before, "accord_http_requests_total", **labels) == 1, labels
        timed = _sample(after, "accord_http_request_seconds_count", **labels)
        assert timed - _sample(before, "accord_http_request_seconds_count", **labels) == 1
    assert agreement_id not in after
    assert nowhere not in after


# -- traces ---------------------------------------------------------------------------------


async def _serve(app: FastAPI, calls: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run the app's lifespan around `calls` (its spans are exported when it ends)."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://accord.test") as api:
            return await calls(api)


def _everything_said(span: ReadableSpan) -> str:
    """A span's name and every attribute value, its events' included, as one text."""
    values = [span.name, str(span.status.description)]
    values += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
    for event in span.events:
        values += [event.name] + [f"{k}={v!r}" for k, v in (event.attributes or {}).items()]
    return "\n".join(values)


def test_traces_carry_decision_ids_and_revision_but_no_persons_data(
    database_url: str,
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    key = create_key(env, "t-traced", scopes="decide:any,audit", agencies=AGENCY)
    person = f"P-TRACE-{uuid.uuid4().hex[:12]}"
    birth_date = "2013-05-17"
    single = {**MASH_REQUEST, "subject": {"id": person, "attributes": {"age": 12}}}
    batch = {
        **{name: value for name, value in MASH_REQUEST.items() if name != "field"},
        "subject": {"id": person, "attributes": {"birth_date": birth_date}},
        "fields": ["criminal.convictions", "identity.name"],
    }
    headers = {"authorization": f"Bearer {key}"}

    async def calls(api: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await api.post("/v1/decisions", json=single, headers=headers),
            await api.post("/v1/decisions/batch", json=batch, headers=headers),
            await api.get(f"/v1/audit/subject-access/{person}", headers=headers),
            await api.get("/v1/audit/decisions", params={"person": person}, headers=headers),
        ]

    exporter = InMemorySpanExporter()
    app = create_app(settings_of(env), span_exporter=exporter)
    try:
        answers = asyncio.run(_serve(app, calls))
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200]
    decided, batched = answers[0].json(), answers[1].json()

    spans = exporter.get_finished_spans()
    server_spans = {span.name: span for span in spans if span.kind == SpanKind.SERVER}
    single_span = server_spans["POST /v1/decisions"].attributes or {}
    assert list(single_span["accord.decision_ids"]) == [decided["decision_id"]]  # type: ignore[arg-type]
    assert single_span["accord.policy_revision"] == decided["policy_revision"]
    assert single_span["http.route"] == "/v1/decisions"
    batch_span = server_spans["POST /v1/decisions/batch"].attributes or {}
    assert list(batch_span["accord.decision_ids"]) == [  # type: ignore[arg-type]
        d["decision_id"] for d in batched["decisions"]
    ]
    assert batch_span["accord.policy_revision"] == batched["policy_revision"]
    assert "GET /v1/audit/subject-access/{person_id}" in server_spans
    assert "GET /v1/audit/decisions" in server_spans

    for span in spans:
        said = _everything_said(span)
        for secret in (person, birth_date, key):
            assert secret not in said, f"{secret!r} in span {span.name}:\n{said}"


def test_without_an_otlp_endpoint_nothing_is_instrumented(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def middleware(app: FastAPI) -> list[type]:
        layers: list[type] = []
        layer: Any = app.build_middleware_stack()
        while layer is not None and len(layers) < 50:
            layers.append(type(layer))
            layer = getattr(layer, "app", None)
        return layers

    for variable in ENDPOINT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    settings = settings_of(scenario_env(database_url))
    assert OpenTelemetryMiddleware not in middleware(create_app(settings))

    # The same app with an endpoint configured: the instrumentation wraps every request.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    traced = create_app(settings)
    try:
        assert OpenTelemetryMiddleware in middleware(traced)
        asyncio.run(_serve(traced, lambda api: api.get("/healthz")))  # its provider shut down
    finally:
        FastAPIInstrumentor.uninstrument_app(traced)
