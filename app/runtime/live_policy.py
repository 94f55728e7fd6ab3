"""What a replica decides and authenticates with, kept at the database's revisions.

A background task polls two revisions in one query (app/store/revisions.py).
When the client revision moves (an API client created or revoked), the callers
are reloaded: one small query, no compile. When the policy revision moves
(agreements, register), the policy is compiled off the event loop and swapped in
with one assignment, so a decision in flight finishes on the policy it started
with. A policy that fails to compile is logged and the previous one stays live;
the callers follow their own revision whatever happens to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
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
from app.runtime.callers import Caller
from app.runtime.collector import collector_paused
from app.runtime.metrics import (
    CLIENT_REVISION,
    POLICY_COMPILES,
    POLICY_RELOAD_FAILURES,
    POLICY_RELOAD_SECONDS,
    POLICY_REVISION,
)
from app.runtime.snapshot import PolicySnapshot
from app.store.revisions import CLIENTS, POLICY, read_revision, read_revisions

log = structlog.get_logger(__name__)


def load_policy(engine: Engine, *, vocabulary_file: Path, model_file: Path) -> CompiledPolicy:
    """Read the agreements at one policy revision and compile them."""
    vocabulary = load_vocabulary(vocabulary_file)
    with Session(engine) as session, session.begin():
        revision = read_revision(session, POLICY)
        agreements = current_agreements(session, vocabulary)
    return compile_policy(
        revision=revision,
        vocabulary=vocabulary,
        agreements=agreements,
        model_text=model_file.read_text(encoding="utf-8"),
    )


@dataclass(frozen=True)
class HeldCallers:
    """The live API clients by key digest, as read at one client revision."""

    revision: int
    by_digest: Mapping[str, Caller]


class LiveCallers:
    """The API clients this replica authenticates against, at the database's client revision.

    Held apart from the compiled policy: reloading them is one small query and
    never compiles, so a revoked key is refused within a poll interval even while
    a policy compiles or fails to.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held: HeldCallers | None = None
        self._loading = threading.Lock()

    @property
    def current(self) -> Mapping[str, Caller]:
        if self._held is None:
            raise PolicyUnavailable("no API clients are loaded")
        return self._held.by_digest

    @property
    def revision(self) -> int | None:
        return None if self._held is None else self._held.revision

    def refresh(self, revision: int) -> None:
        """Reload the callers unless `revision`, just read from the database, is the one held.

        Any other revision is reloaded, a lower one too (a database restored from a backup).
        """
        if self._held is not None and self._held.revision == revision:
            return
        with self._loading, Session(self._engine) as session, session.begin():
            revision = read_revision(session, CLIENTS)  # first: the clients read are this new
            if self._held is not None and self._held.revision == revision:
                return  # another thread loaded it meanwhile
            held = HeldCallers(revision, load_callers(session))
            self._held = held  # one assignment: authentication never sees half a list
            CLIENT_REVISION.set(revision)
        log.info("API clients loaded", client_revision=revision, clients=len(held.by_digest))


class LivePolicy:
    """The compiled policy a replica decides with, and beside it (`clients`) the API
    clients it authenticates against, each kept at its own revision by `follow`."""

    def __init__(self, engine: Engine, *, vocabulary_file: Path, model_file: Path) -> None:
        self._engine = engine
        self._vocabulary_file = vocabulary_file
        self._model_file = model_file
        self._snapshot: PolicySnapshot | None = None
        self._compiling = threading.Lock()
        self.clients = LiveCallers(engine)

    @property
    def current(self) -> CompiledPolicy:
        return self.snapshot.policy

    @property
    def snapshot(self) -> PolicySnapshot:
        """The policy with its enforcer and memo: one revision's, all together."""
        if self._snapshot is None:
            raise PolicyUnavailable("no policy is loaded")
        return self._snapshot

    @property
    def callers(self) -> Mapping[str, Caller]:
        """The API clients by key digest (they follow the client revision, not the policy's)."""
        return self.clients.current

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    def refresh(self) -> None:
        """Follow the database's revisions (blocking): callers first, then the policy.

        The callers are reloaded if the client revision moved, whatever happens to
        the policy after; the policy is compiled only if the policy revision moved.
        If it fails to compile, the previous one stays live and the error is raised.
        """
        with self._engine.connect() as connection:
            revisions = read_revisions(connection)
        self.clients.refresh(revisions.clients)
        if self._snapshot is None or self._snapshot.policy.revision != revisions.policy:
            self._compile()

    def _compile(self) -> None:
        """Compile and swap in the database's policy unless it is the one held."""
        with self._compiling:
            with self._engine.connect() as connection:
                revision = read_revision(connection, POLICY)
            if self._snapshot is not None and self._snapshot.policy.revision == revision:
                return  # another thread compiled it meanwhile
            started = time.perf_counter()
            POLICY_COMPILES.inc()
            try:
                with collector_paused():
                    policy = load_policy(
                        self._engine,
                        vocabulary_file=self._vocabulary_file,
                        model_file=self._model_file,
                    )
                    snapshot = PolicySnapshot.of(policy)
            except Exception:
                POLICY_RELOAD_FAILURES.inc()
                raise
            self._snapshot = snapshot  # one assignment: decisions in flight keep the old one
            POLICY_RELOAD_SECONDS.observe(time.perf_counter() - started)
            POLICY_REVISION.set(policy.revision)
        log.info(
            "policy loaded",
            policy_revision=policy.revision,
            agreements=len(policy.agreements),
        )
