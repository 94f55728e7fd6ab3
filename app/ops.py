"""Health and readiness for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import text

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
