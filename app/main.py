"""create_app(): the one composition root. Builds the parts in order and wires routes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from app.agreements.access_map import router as access_map_router
from app.agreements.router import router as agreements_router
from app.audit.partitions import ENSURE_EVERY_SECONDS, keep_partitions_ahead
from app.audit.router import router as audit_router
from app.audit.signing import configured_signer
from app.audit.writer import AuditWriter
from app.changelog.router import router as changes_router
from app.clients.router import router as clients_router
from app.config import Settings, get_settings
from app.console.router import router as console_router
from app.decision.facts import PersonInfoService
from app.decision.router import decision_router
from app.decision.router import router as decisions_router
from app.decision.service import DecisionService
from app.register.router import IMPORT_PATH
from app.register.router import router as register_router
from app.runtime.clock import Clock, SystemClock
from app.runtime.follow import follow
from app.runtime.live_policy import LivePolicy
from app.runtime.logs import configure_logging
from app.runtime.register import LiveRegister
from app.store.database import make_engine
from app.vocabulary.router import router as vocabulary_router
from app.web.auth import Authenticate
from app.web.decision_route import DecisionFastPath
from app.web.health import router as ops_router
from app.web.limits import ClientLimits
from app.web.middleware import BodyLimit, HttpMetrics, RequestContext
from app.web.openapi import document_problems
from app.web.problems import install_problem_handlers
from app.web.query import reject_unknown_query
from app.web.tracing import instrument

log = structlog.get_logger(__name__)


def _operation_id(route: APIRoute) -> str:
    """Stable operation ids (the function name), so openapi.yaml does not churn."""
    return route.name


# The event loop and the audit writer thread share the GIL; the default 5 ms
# switch interval would let one make the other wait that long per handoff.
SWITCH_INTERVAL_SECONDS = 0.0005


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """The service; `clock` defaults to the system's (tests pass a FixedClock). Its requests
    are traced to `span_exporter`, or over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    (app/web/tracing.py); otherwise not at all."""
    settings = settings or get_settings()
    clock = clock or SystemClock()
    tracer_provider: TracerProvider | None = None
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Refuse to start rather than write an audit trail a database writer could forge.
        signer = configured_signer(
            settings.audit_signing_key_file, unsigned=settings.audit_unsigned
        )
        engine = make_engine(settings.database_url)
        audit_engine = make_engine(settings.database_url, write_lock_at_begin=True)
        writer = AuditWriter(
            audit_engine,
            signer=signer,
            max_batch_rows=settings.audit_max_batch,
            timeout_seconds=settings.audit_timeout_seconds,
        )
        live = LivePolicy(
            engine, vocabulary_file=settings.vocabulary_file, model_file=settings.model_file
        )
        register = LiveRegister(engine, max_lag_seconds=settings.register_max_lag_seconds)
        person_info = (
            PersonInfoService(
                settings.person_info_url,
                timeout_seconds=settings.person_info_timeout_seconds,
                cache_seconds=settings.person_info_cache_seconds,
                cache_size=settings.person_info_cache_size,
            )
            if settings.person_info_url
            else None
        )
        app.state.settings, app.state.engine, app.state.clock = settings, engine, clock
        app.state.audit_signer = signer
        app.state.live, app.state.register = live, register
        app.state.decisions = DecisionService(
            live=live,
            register=register,
            writer=writer,
            person_info=person_info,
            max_fields=settings.max_batch_fields,
            clock=clock,
            offloaded=asyncio.Semaphore(settings.max_concurrent_simulations),
        )
        writer.start()
        try:
            await asyncio.to_thread(live.refresh)
        except Exception as exc:  # not ready until a policy compiles; keep trying
            log.error("no policy at start", error=str(exc))
        try:
            await asyncio.to_thread(register.refresh)
        except Exception as exc:  # not ready until the register loads; keep trying
            log.error("no register at start", error=str(exc))
        interval = settings.policy_poll_seconds
        followers = [
            # a failed reload keeps the previous policy and API clients
            asyncio.create_task(
                follow(live.refresh, interval=interval, failure="policy refresh failed")
            ),
            # a register view that cannot be refreshed ages; past its lag it fails closed
            asyncio.create_task(
                follow(register.refresh, interval=interval, failure="register refresh failed")
            ),
            # PostgreSQL: this month's audit partition and the next two's, made ahead, daily
            asyncio.create_task(
                follow(
                    lambda: keep_partitions_ahead(engine),
                    interval=ENSURE_EVERY_SECONDS,
                    failure="audit partitions not made",
                )
            ),
        ]
        try:
            yield
        finally:
            for task in followers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(writer.stop)
            audit_engine.dispose()
            if person_info is not None:
                await person_info.aclose()
            engine.dispose()
            if tracer_provider is not None:  # the last spans are exported
                await asyncio.to_thread(tracer_provider.shutdown)

    app = FastAPI(
        title="Accord",
        version="0.1.0",
        summary="Policy decisions for multi-agency information sharing, with a durable audit",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        dependencies=[Depends(reject_unknown_query)],
        docs_url=None,  # /openapi.json needs a key like every other route; see openapi.yaml
        redoc_url=None,
        # FastAPI's own telemetry stays off (it would look for a provider on every request):
        # metrics are Prometheus's (app/runtime/metrics.py), traces opentelemetry-
        # instrumentation-fastapi's, when configured (app/web/tracing.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    for router in (
        ops_router,
        decision_router,
        decisions_router,
        vocabulary_router,
        agreements_router,
        access_map_router,
        register_router,
        clients_router,
        audit_router,
        changes_router,
        console_router,
    ):
        app.include_router(router)
    # innermost: the decision routes' fast path, after the body limit and the key check
    app.add_middleware(DecisionFastPath, routes=decision_router.routes)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        bounds={IMPORT_PATH: settings.max_import_bytes},
    )
    app.add_middleware(  # inside Authenticate: counts the caller it found, before the body
        ClientLimits,
        rate_per_second=settings.client_rate_per_second,
        max_concurrent=settings.client_max_concurrent,
    )
    app.add_middleware(Authenticate)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestContext)
    app.add_middleware(HttpMetrics)  # outermost: every answer, RequestContext's 500s included
    tracer_provider = instrument(app, span_exporter)  # around all of it, when tracing is on
    return app
