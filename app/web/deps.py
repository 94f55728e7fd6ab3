"""Shared FastAPI dependencies as Annotated aliases; the app's parts live on app.state.

The ones that only read app.state are `async def`: FastAPI runs a plain `def`
dependency in its thread pool, which costs a thread hop per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.decision.service import DecisionService
from app.runtime.clock import Clock
from app.runtime.live_policy import LivePolicy
from app.runtime.register import LiveRegister


def _session(request: Request) -> Iterator[Session]:
    """A session for one request; routes that write commit before they answer."""
    with Session(request.app.state.engine) as session:
        yield session


async def _live(request: Request) -> LivePolicy:
    live: LivePolicy = request.app.state.live
    return live


async def _register(request: Request) -> LiveRegister:
    register: LiveRegister = request.app.state.register
    return register


async def _decisions(request: Request) -> DecisionService:
    decisions: DecisionService = request.app.state.decisions
    return decisions


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


async def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


DbSession = Annotated[Session, Depends(_session)]
Live = Annotated[LivePolicy, Depends(_live)]
Register = Annotated[LiveRegister, Depends(_register)]
Decisions = Annotated[DecisionService, Depends(_decisions)]
AppSettings = Annotated[Settings, Depends(_settings)]
RequestId = Annotated[str, Depends(_request_id)]
Now = Annotated[datetime, Depends(_now)]  # the replica clock's time
