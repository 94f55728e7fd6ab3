"""The compiled policy this replica decides with, kept at the database's revision.

A background task polls the revision; when it moves, the policy is compiled
off the event loop and swapped in with one assignment, so a decision in flight
finishes on the policy it started with. A policy that fails to compile is
logged and the previous one stays live.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.agreements.service import current_agreements
from app.errors import PolicyUnavailable
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.files import load_vocabulary
from app.policy_state import read_revision
from app.register.service import load_register

log = structlog.get_logger(__name__)


def compile_from_database(
    engine: Engine, *, vocabulary_file: Path, model_file: Path
) -> CompiledPolicy:
    """Read agreements and register at one revision and compile them."""
    vocabulary = load_vocabulary(vocabulary_file)
    with Session(engine) as session, session.begin():
        revision = read_revision(session)
        agreements = current_agreements(session, vocabulary)
        register = load_register(session)
    return compile_policy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=agreements,
        register=register,
        model_text=model_file.read_text(encoding="utf-8"),
    )


class LivePolicy:
    def __init__(self, engine: Engine, *, vocabulary_file: Path, model_file: Path) -> None:
        self._engine = engine
        self._vocabulary_file = vocabulary_file
        self._model_file = model_file
        self._policy: CompiledPolicy | None = None
        self._compiling = threading.Lock()

    @property
    def current(self) -> CompiledPolicy:
        if self._policy is None:
            raise PolicyUnavailable("no policy is loaded")
        return self._policy

    @property
    def loaded(self) -> bool:
        return self._policy is not None

    def refresh(self) -> None:
        """Compile and swap in the database's policy if its revision moved (blocking)."""
        with self._compiling:
            with self._engine.connect() as connection:
                revision = read_revision(connection)
            if self._policy is not None and self._policy.revision >= revision:
                return
            policy = compile_from_database(
                self._engine, vocabulary_file=self._vocabulary_file, model_file=self._model_file
            )
            self._policy = policy  # one assignment: decisions in flight keep the old one
        log.info("policy loaded", policy_revision=policy.revision, lines=policy.line_count)

    async def follow(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the previous policy; try again next time
                log.error("policy refresh failed", error=str(exc))
            await asyncio.sleep(interval)
