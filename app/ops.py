"""Health and readiness for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import text

from app.auth import AnyClient
from app.metrics import render
from app.problems import Problem, problem_response

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    policy_revision: int


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Problem}})
async def readyz(request: Request) -> Readiness | Response:
    """Ready to decide: the database answers and a policy is loaded."""
    engine = request.app.state.engine

    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), timeout=2)
    except Exception as exc:
        return problem_response(503, "Not ready", f"database unreachable: {type(exc).__name__}")
    live = request.app.state.live
    if not live.loaded:
        return problem_response(503, "Not ready", "no policy loaded")
    return Readiness(status="ready", policy_revision=live.current.revision)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"}},
)
def metrics(request: Request, caller: AnyClient) -> Response:
    """Prometheus metrics (any API key)."""
    settings = request.app.state.settings
    body, content_type = render(
        request.app.state.engine, timedelta(days=settings.break_glass_review_days)
    )
    return Response(body, media_type=content_type)
