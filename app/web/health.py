"""Health and readiness for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, text

from app.audit.reviews import BreakGlassQueue
from app.config import Settings
from app.runtime.callers import SCOPES, Caller
from app.runtime.clock import Clock
from app.runtime.metrics import render
from app.web.auth import authorized
from app.web.problems import Problem, problem_response

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    policy_revision: int
    client_revision: int
    register_seq: int = Field(description="The last register change this replica applied")


# PostgreSQL: can this session write audit rows? A read-only cluster, database or
# standby (transaction_read_only), or a role without INSERT on the audit table.
_PG_AUDIT_WRITABLE = text(
    "SELECT current_setting('transaction_read_only') = 'off'"
    " AND coalesce(has_table_privilege(to_regclass('audit_decisions'), 'INSERT'), true)"
    " AND coalesce(has_table_privilege(to_regclass('audit_chain_head'), 'UPDATE'), true)"
)


def _audit_store_read_only(connection: Connection) -> bool:
    """True when audit rows cannot be written now, though the database answers reads."""
    if connection.dialect.name == "postgresql":
        return not connection.execute(_PG_AUDIT_WRITABLE).scalar()
    database = connection.engine.url.database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        return False
    # SQLite writes through the file and its WAL (a read-only filesystem, an
    # immutable or write-protected file); os.access sees what the kernel would refuse.
    files = [database, f"{database}-wal"]
    return any(os.path.exists(path) and not os.access(path, os.W_OK) for path in files)


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Problem}})
async def readyz(request: Request) -> Readiness | Response:
    """Ready to decide: the database answers and takes audit rows (after a failed audit
    commit, a probe commit must succeed); a policy, the API clients and a current view of
    the register are loaded."""
    engine = request.app.state.engine

    def ping() -> bool:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            return _audit_store_read_only(connection)

    try:
        read_only = await asyncio.wait_for(asyncio.to_thread(ping), timeout=2)
    except Exception as exc:
        return problem_response(503, "Not ready", f"database unreachable: {type(exc).__name__}")
    if read_only:
        return problem_response(
            503, "Not ready", "database is read-only: no audit row can be written"
        )
    writer = request.app.state.decisions.writer
    if writer.failing:
        try:
            await asyncio.wait_for(asyncio.to_thread(writer.probe), timeout=2)
        except Exception as exc:
            return problem_response(
                503, "Not ready", f"audit rows cannot be written: {type(exc).__name__}"
            )
    live = request.app.state.live
    if not live.loaded:
        return problem_response(503, "Not ready", "no policy loaded")
    client_revision = live.clients.revision
    if client_revision is None:
        return problem_response(503, "Not ready", "no API clients loaded")
    register = request.app.state.register
    if not register.is_current() or register.seq is None:
        return problem_response(
            503,
            "Not ready",
            f"register view not confirmed current for {register.lag_seconds():.1f} s",
        )
    return Readiness(
        status="ready",
        policy_revision=live.current.revision,
        client_revision=client_revision,
        register_seq=register.seq,
    )


def render_metrics(engine: Engine, settings: Settings, clock: Clock) -> tuple[bytes, str]:
    """The Prometheus exposition: this process's metrics (or every worker's, summed), then
    the gauges counted in the database at scrape time. The metrics port serves the same."""
    return render(BreakGlassQueue(engine, timedelta(days=settings.break_glass_review_days), clock))


_METRICS_ONLY = frozenset({"metrics"})
_ANY_SCOPE = frozenset(SCOPES)


async def _metrics_reader(request: Request) -> Caller:
    """Any API key; with ACCORD_REQUIRE_METRICS_SCOPE, only a key with the `metrics` scope."""
    required = request.app.state.settings.require_metrics_scope
    return authorized(request.scope, _METRICS_ONLY if required else _ANY_SCOPE)


MetricsReader = Annotated[Caller, Depends(_metrics_reader)]


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"}},
)
def metrics(request: Request, caller: MetricsReader) -> Response:
    """Prometheus metrics: any API key, or with ACCORD_REQUIRE_METRICS_SCOPE only a key with
    the `metrics` scope. ACCORD_METRICS_PORT serves them on a port of their own, without one."""
    state = request.app.state
    body, content_type = render_metrics(state.engine, state.settings, state.clock)
    return Response(body, media_type=content_type)
