"""The compiled policy this replica decides with, kept at the database's revision.

A background task polls the revision; when it moves, the policy is compiled
off the event loop and swapped in with one assignment, so a decision in flight
finishes on the policy it started with. A policy that fails to compile is
logged and the previous one stays live.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.agreements.service import current_agreements
from app.clients.service import load_callers
from app.errors import PolicyUnavailable
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.files import load_vocabulary
from app.register.service import load_register
from app.runtime.callers import Caller
from app.runtime.metrics import POLICY_RELOAD_FAILURES, POLICY_RELOAD_SECONDS, POLICY_REVISION
from app.runtime.snapshot import PolicySnapshot
from app.store.revisions import read_revision

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LiveState:
    """What a replica holds for one revision: the policy snapshot and the API clients."""

    snapshot: PolicySnapshot
    callers: Mapping[str, Caller]


def load_state(engine: Engine, *, vocabulary_file: Path, model_file: Path) -> LiveState:
    """Read agreements, register and clients at one revision and compile the policy."""
    vocabulary = load_vocabulary(vocabulary_file)
    with Session(engine) as session, session.begin():
        revision = read_revision(session)
        agreements = current_agreements(session, vocabulary)
        register = load_register(session)
        callers = load_callers(session)
    policy = compile_policy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=agreements,
        register=register,
        model_text=model_file.read_text(encoding="utf-8"),
    )
    return LiveState(snapshot=PolicySnapshot.of(policy), callers=callers)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a policy is read and compiled; then the
    survivors, the new policy among them, are frozen out of later collections.

    Compiling allocates enough long-lived objects to set off full collections,
    each a 100-300 ms pause of every thread at 10,000 agreements (decisions
    included); paused, the compile is also twice as fast. A replaced policy has
    no reference cycles, so reference counting frees it, frozen or not
    (tests/policy/test_compiler.py); what a freeze keeps from the cyclic
    collector for good is the cyclic garbage of that moment, once per reload.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()


class LivePolicy:
    def __init__(self, engine: Engine, *, vocabulary_file: Path, model_file: Path) -> None:
        self._engine = engine
        self._vocabulary_file = vocabulary_file
        self._model_file = model_file
        self._state: LiveState | None = None
        self._compiling = threading.Lock()

    @property
    def current(self) -> CompiledPolicy:
        return self._loaded().snapshot.policy

    @property
    def snapshot(self) -> PolicySnapshot:
        """The policy with its enforcer and memo, one revision's all together."""
        return self._loaded().snapshot

    @property
    def callers(self) -> Mapping[str, Caller]:
        return self._loaded().callers

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def _loaded(self) -> LiveState:
        if self._state is None:
            raise PolicyUnavailable("no policy is loaded")
        return self._state

    def refresh(self) -> None:
        """Compile and swap in the database's policy if its revision moved (blocking).

        Any other revision is reloaded, a lower one too (a database restored from a
        backup). If the new policy fails to compile, the previous one stays live but
        the API clients are still taken from the new revision, so a revoked key stops
        working whatever happens to the agreements.
        """
        with self._compiling:
            with self._engine.connect() as connection:
                revision = read_revision(connection)
            if self._state is not None and self._state.snapshot.policy.revision == revision:
                return
            started = time.perf_counter()
            try:
                with collector_paused():
                    state = load_state(
                        self._engine,
                        vocabulary_file=self._vocabulary_file,
                        model_file=self._model_file,
                    )
            except Exception:
                POLICY_RELOAD_FAILURES.inc()
                self._take_callers()
                raise
            self._state = state  # one assignment: decisions in flight keep the old policy
            POLICY_RELOAD_SECONDS.observe(time.perf_counter() - started)
            POLICY_REVISION.set(state.snapshot.policy.revision)
        log.info(
            "policy loaded",
            policy_revision=state.snapshot.policy.revision,
            agreements=len(state.snapshot.policy.agreements),
            persons_in_register=len(state.snapshot.policy.register),
        )

    def _take_callers(self) -> None:
        """Keep the policy but take the database's API clients, if it can be read."""
        if self._state is None:
            return
        try:
            with Session(self._engine) as session:
                callers = load_callers(session)
        except Exception as exc:  # the database is unreachable: the reload's error says so
            log.error("API clients not reloaded", error=str(exc).splitlines()[0])
            return
        self._state = LiveState(self._state.snapshot, callers)

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
