"""The person register as this replica holds it: every person's entries, kept current
from the register change feed, never compiled into the policy.

A background task reads the changes after the last one applied (a few rows,
usually none) and swaps each touched person's entries in with one
assignment. A decision takes the asking person's entries from here; if this
view has not been confirmed current within ACCORD_REGISTER_MAX_LAG_SECONDS
(the feed cannot be read), decisions fail closed with 503: a missing
objection must never turn into a permit.
"""

from __future__ import annotations

import threading
import time

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.errors import Unavailable
from app.policy.register import NO_ENTRIES, Consent, PersonRegister, Restriction
from app.register.feed import CHANGES_PER_READ, feed_head
from app.register.service import changes_after, load_register
from app.runtime.collector import collector_paused
from app.runtime.gil import ShardedDict
from app.runtime.metrics import REGISTER_CHANGES_APPLIED, REGISTER_SEQ

log = structlog.get_logger(__name__)


class RegisterStale(Unavailable):
    """This replica cannot confirm its view of the register is current (503)."""

    title = "Register unavailable: no decision was made"


def _with(
    entries: PersonRegister, entry: Restriction | Consent | None, entry_id: str
) -> PersonRegister:
    """A person's entries with `entry_id` replaced by `entry` (None: removed)."""
    restrictions = tuple(r for r in entries.restrictions if r.id != entry_id)
    consents = tuple(c for c in entries.consents if c.id != entry_id)
    if isinstance(entry, Restriction):
        restrictions += (entry,)
    elif isinstance(entry, Consent):
        consents += (entry,)
    return PersonRegister(restrictions, consents) if restrictions or consents else NO_ENTRIES


class LiveRegister:
    def __init__(self, engine: Engine, *, max_lag_seconds: float) -> None:
        self._engine = engine
        self._max_lag = max_lag_seconds
        # a million entries, changed while decisions are made: app/runtime/gil.py
        self._by_person: ShardedDict[str, PersonRegister] = ShardedDict()
        self._person_of: ShardedDict[str, str] = ShardedDict()  # entry id -> its person
        self._seq: int | None = None  # the last change applied; None: not loaded
        self._confirmed_at = float("-inf")  # when a read last reached the feed's head
        self._reading = threading.Lock()

    @property
    def seq(self) -> int | None:
        return self._seq

    @property
    def persons(self) -> int:
        return len(self._by_person)

    def lag_seconds(self) -> float:
        """How long since this view was last confirmed current."""
        return time.monotonic() - self._confirmed_at

    def is_current(self) -> bool:
        return self._seq is not None and self.lag_seconds() <= self._max_lag

    def entries(self, person_id: str) -> PersonRegister:
        """The person's live entries; RegisterStale if this view may be behind."""
        if not self.is_current():
            raise RegisterStale(
                "this replica has not confirmed its view of the person register within "
                f"{self._max_lag:g} s (ACCORD_REGISTER_MAX_LAG_SECONDS)"
            )
        return self._by_person.get(person_id, NO_ENTRIES)

    def refresh(self) -> None:
        """Load the register, or apply the changes since the last one (blocking)."""
        with self._reading:
            started = time.monotonic()
            if self._seq is None:
                self._load()
            else:
                self._catch_up()
            self._confirmed_at = started  # everything committed before `started` is seen

    @collector_paused()  # and the million entries loaded are frozen out of collections
    def _load(self) -> None:
        with Session(self._engine) as session, session.begin():
            head = feed_head(session)  # first: entries read after it are at least as new
            loaded = load_register(session)
        self._by_person = loaded.by_person
        self._person_of = loaded.person_of
        self._seq = head
        REGISTER_SEQ.set(head)
        log.info("register loaded", register_seq=head, persons=len(self._by_person))

    def _catch_up(self) -> None:
        """Apply the changes since the last one applied. A bulk of them (an import) is
        applied with the collector paused, as a load is: otherwise full collections of
        60-300 ms each. A few (every poll) are not: a freeze after each poll would keep
        that poll's cyclic garbage for good."""
        if self._apply_next_changes() == CHANGES_PER_READ:
            with collector_paused():
                while self._apply_next_changes() == CHANGES_PER_READ:
                    pass

    def _apply_next_changes(self) -> int:
        """Read the next changes from the feed and apply them; how many there were."""
        assert self._seq is not None
        with Session(self._engine) as session:
            changes = changes_after(session, self._seq)
        for seq, entry_id, entry in changes:
            self._apply(entry_id, entry)
            self._seq = seq
        if changes:
            REGISTER_CHANGES_APPLIED.inc(len(changes))
            REGISTER_SEQ.set(self._seq)
        return len(changes)

    def _apply(self, entry_id: str, entry: Restriction | Consent | None) -> None:
        """Swap in the touched persons' entries, each with one assignment, so a decision
        never sees a person between an entry's old and new content."""
        before = self._person_of.pop(entry_id)
        after = entry.person_id if entry is not None else None
        if before is not None and before != after:
            self._put(before, _with(self._by_person.get(before, NO_ENTRIES), None, entry_id))
        if entry is not None and after is not None:
            self._put(after, _with(self._by_person.get(after, NO_ENTRIES), entry, entry_id))
            self._person_of[entry_id] = after

    def _put(self, person_id: str, entries: PersonRegister) -> None:
        if entries.empty:
            self._by_person.pop(person_id)
        else:
            self._by_person[person_id] = entries
