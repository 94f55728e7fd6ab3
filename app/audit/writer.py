"""The one place audit rows are written: a group-commit writer.

Decisions hand their records to `AuditWriter.write` and wait. One thread takes
everything that queued while the previous commit was running and writes it in
one transaction, so N concurrent decisions cost one commit (one fsync), not N.
A decision is answered only after its rows are committed; if the commit fails
or takes too long, `write` raises AuditUnavailable and no decision is returned.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass

import structlog
from sqlalchemy import Dialect, Engine, Table, select, update
from sqlalchemy.exc import DataError, IntegrityError

from app.audit.chain import ChainHead, chain_rows
from app.audit.record import AuditRow
from app.audit.signing import AuditSigner
from app.errors import AuditUnavailable
from app.runtime.metrics import AUDIT_BATCH_ROWS, AUDIT_COMMIT_SECONDS, AUDIT_FAILURES
from app.store.bulk import insert_rows
from app.store.tables import AuditChainHead, AuditDecision

log = structlog.get_logger(__name__)
AUDIT_TABLE: Table = AuditDecision.__table__  # type: ignore[assignment]
AUDIT_CHAIN_HEAD: Table = AuditChainHead.__table__  # type: ignore[assignment]


@dataclass
class _Pending:
    records: list[AuditRow]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the caller gave up (timeout or disconnect)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _DriverHead:
    """Reading (under its lock) and moving the chain head, as driver SQL: built with the ORM
    entity, each statement cost more per commit than the commit itself."""

    def __init__(self, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        table = quote(AUDIT_CHAIN_HEAD.name)
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        # SQLite has no row locks: the writer's BEGIN IMMEDIATE holds its write lock.
        lock = "" if dialect.name == "sqlite" else " FOR UPDATE"
        self.read = f"SELECT last_seq, last_hash FROM {table} WHERE id = 1{lock}"
        self.move = (
            f"UPDATE {table} SET last_seq = {marker}, last_hash = {marker}, "
            f"signature = {marker} WHERE id = 1"
        )


class AuditWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        signer: AuditSigner | None,
        max_batch_rows: int,
        timeout_seconds: float,
    ) -> None:
        self._engine = engine
        self._signer = signer  # signs each head it writes; None only when running unsigned
        self._head = _DriverHead(engine.dialect)
        self._max_batch_rows = max_batch_rows
        self._timeout = timeout_seconds
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.commits = 0
        self.failing = False  # the last commit failed, and not for one row's content

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def write(self, records: list[AuditRow]) -> None:
        """Return once `records` are committed; raise AuditUnavailable otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(records, future, loop))
        try:
            async with asyncio.timeout(self._timeout):  # lighter than wait_for's extra future
                await future
        except TimeoutError as exc:
            raise AuditUnavailable("audit commit timed out") from exc

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, rows = [first], len(first.records)
            while rows < self._max_batch_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                rows += len(item.records)
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        """Commit the batch and settle its callers. A failure that comes from a row's
        content (DataError, IntegrityError) is retried a request at a time, so one bad
        row fails its own request alone; any other failure fails the whole batch."""
        error = self._write(batch)
        if isinstance(error, DataError | IntegrityError) and len(batch) > 1:
            errors = [self._write([pending]) for pending in batch]
            for pending, alone in zip(batch, errors, strict=True):
                self._settle([pending], alone)
            self.failing = all(errors)
            return
        self.failing = error is not None and not isinstance(error, DataError | IntegrityError)
        self._settle(batch, error)

    def probe(self) -> None:
        """Commit what a batch's commit touches, changing nothing (the chain head's row
        set to itself; the audit table read): raises while audit rows cannot be written.
        /readyz asks this after a failed commit, whatever the cause (a full disk, a lock,
        a missing table), and a success clears `failing`."""
        with self._engine.begin() as connection:
            connection.execute(
                update(AuditChainHead)
                .where(AuditChainHead.id == 1)
                .values(last_seq=AuditChainHead.last_seq)
            )
            connection.execute(select(AuditDecision.seq).limit(1)).all()
        self.failing = False

    def _write(self, batch: list[_Pending]) -> BaseException | None:
        """Write the batch's rows in one transaction; the error if it failed."""
        started = time.perf_counter()
        try:
            with self._engine.begin() as connection:
                # The head row's lock orders batches from every replica: seq and the
                # hash chain follow commit order.
                last_seq, last_hash = connection.exec_driver_sql(self._head.read).one()
                rows = chain_rows(
                    [dict(record) for pending in batch for record in pending.records],
                    after_seq=last_seq,
                    after_hash=last_hash,
                )
                insert_rows(connection, AUDIT_TABLE, rows)  # COPY on PostgreSQL
                new_head = ChainHead(rows[-1]["seq"], rows[-1]["row_hash"])
                signer = self._signer
                signature = None if signer is None else signer.sign(new_head.statement())
                connection.exec_driver_sql(
                    self._head.move, (new_head.seq, new_head.hash, signature)
                )
            self.commits += 1
            AUDIT_BATCH_ROWS.observe(len(rows))
            AUDIT_COMMIT_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:  # any failure: no decision may be answered
            AUDIT_FAILURES.inc()
            decision_ids = [record["decision_id"] for p in batch for record in p.records]
            log.error(  # never the rows' values (SQLAlchemy's text carries its parameters)
                "audit commit failed",
                error_type=type(exc).__name__,
                error=str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0],
                rows=len(decision_ids),
                decision_ids=decision_ids[:20],
            )
            return exc
        return None

    def _settle(self, batch: list[_Pending], failure: BaseException | None) -> None:
        error = None if failure is None else AuditUnavailable("audit store unavailable")
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending.future)
        for loop, futures in by_loop.items():  # one wake-up per event loop, not per decision
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:  # the caller's event loop has closed
                continue
