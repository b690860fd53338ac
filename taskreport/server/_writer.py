"""Group commit: one thread runs every write, committing whatever queued up meanwhile in one transaction.

SQLite allows one writer at a time and each commit costs a WAL append, so N concurrent requests that each
take the lock and commit in the thread pool mostly wait on each other. Here they queue instead; the writer
thread drains the queue, runs each write under its own savepoint (so one failing write is rolled back
alone) and commits the batch once. Callers get their result when the batch that holds their write has
committed, never before.

PostgreSQL takes many writers at once, and there a round trip, not the lock, is what a write waits on: one
thread would make every write's statements back to back. So on PostgreSQL several threads take batches from
the one queue, each on a connection of the store's pool. Two batches that touch the same rows in opposite
orders can deadlock; PostgreSQL then fails one statement, and that write is run again alone after its batch.

Progress updates (a PATCH of ``value`` alone, the commonest request by far) that follow each other in a batch
are written in one statement rather than a savepoint, an update and a release each: on PostgreSQL that is
three round trips a request fewer (persisted PATCH/s 0.18x -> 0.37x the no-op app, same run). A batch of
nothing but such updates is that one statement alone, committed by itself: on PostgreSQL one round trip
instead of five (BEGIN, SAVEPOINT, the update, RELEASE, COMMIT); with the cheaper request handling around
it, persisted PATCH/s there went up 1.3-1.5x (same session, alternating runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .. import _internal
from .._errors import ServerError, TaskReportError
from .._store import Scope, Store, Tx

logger = logging.getLogger("taskreport.server")

T = TypeVar("T")
#: a write that is a progress update only: (project, task id, fields), for writing with its batch's others
Progress = tuple[Scope, str, Mapping[str, Any]]
#: the task a write changes, (project, task id): a batch on PostgreSQL locks those of its writes in one order
Touches = tuple[Scope, str]
_Job = tuple[Callable[[Tx], Any], asyncio.Future[Any], asyncio.AbstractEventLoop, Progress | None, Touches | None]
_STOP = object()


def unavailable() -> ServerError:
    # DRF's 503, in the seed's error format
    return ServerError("Service temporarily unavailable, try again later.", code="service_unavailable", status_code=503)


def _one_set_of_columns(batch: list[_Job]) -> bool:
    """Whether the batch's progress updates all set the same fields: then they are one statement, which commits
    alone (several, each committing on its own, could leave the batch half written when a later one failed)."""
    return len({tuple(sorted(job[3][2])) for job in batch if job[3] is not None}) == 1


def _statement_failed(exc: Exception, lost: bool) -> None:
    """After the statement that writes many progress updates failed (not a clash): each of them is written
    the ordinary way next, and gets its own answer. ``lost``: the database connection went away."""
    if isinstance(exc, TaskReportError) or lost:
        # one request's input the database can not take (a NUL in a task id), or a connection the database
        # closed (a restart): written the ordinary way, each write gets its own refusal or a new connection
        logger.debug("taskreport server: progress updates in one statement failed (%r); writing them one by one",
                     exc)  # fmt: skip
        return
    # not expected: the same writes one by one still get their answers, and the suite hears of it
    _internal.report("progress updates in one statement failed; writing them one by one", exc)


def _settle(jobs: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in jobs:
        if future.done():  # the request was abandoned (client went away)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Writer:
    #: how often a write that clashed with a concurrent transaction is run again, alone
    RETRIES = 3

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 256,
        on_commit: Callable[[], None] | None = None,
        threads: int = 1,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.threads = max(1, threads)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        # set once stopping: from then on a write is refused instead of queued where no one takes it
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("the writer was stopped; make a new one")
        self._workers = [
            threading.Thread(target=self._run, name=f"taskreport-writer-{n}", daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
        workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._refuse_queued()

    @property
    def closed(self) -> bool:
        """True once stopping: every write from then on is refused with a 503."""
        return self._closed

    async def run(self, write: Callable[[Tx], T], progress: Progress | None = None,
                  touches: Touches | None = None) -> T:  # fmt: skip
        """Run ``write(tx)`` in the next batch; its exception, if any, is raised here. Once the writer is
        stopping, raises a 503 :class:`ServerError`. ``progress``: the write is this progress update alone
        (what ``Tx.update_progress`` writes), so it may be written together with its batch's other ones in one
        statement; ``write`` still runs when that can't take it. ``touches``: the one task the write changes
        (implied by ``progress``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if progress is not None:
            touches = (progress[0], progress[1])
        with self._lock:
            if self._closed:
                raise unavailable()
            self._queue.put((write, future, loop, progress, touches))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Job] = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _refuse_queued(self) -> None:
        """Answer the writes that were queued behind the stop with a 503, so that no request waits for a
        writer that is gone. ``run`` queues nothing once ``_closed`` is set, and this runs after that, once
        the threads are gone (a thread doing it would take the stops meant for the others)."""
        with self._lock:
            jobs: list[_Job] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    jobs.append(item)
        self._answer(jobs, [(False, unavailable()) for _ in jobs])

    def _commit(self, batch: list[_Job]) -> None:
        outcomes, fired = self._write(batch)
        for attempt in range(self.RETRIES):
            clashed = [n for n, (ok, value) in enumerate(outcomes) if not ok and self.store.conflict(value)]
            if not clashed:
                break
            if attempt:
                time.sleep(0.001 * 2**attempt)
            for n in clashed:
                outcomes[n], more = self._write_alone(batch[n])
                fired += more
        self._answer(batch, outcomes)
        # the deliverer looks for due firings after a commit that queued some (and on its own timer); waking
        # it after every commit would add a query to the database for each batch of plain updates
        if fired and self.on_commit is not None:
            self.on_commit()

    def _write(self, batch: list[_Job], *, together: bool = True) -> tuple[list[tuple[bool, Any]], int]:
        """Run the batch in one transaction: each write's outcome, and the firings the transaction queued.
        ``together``: progress updates that follow each other are written in one statement."""
        if together and self._progress_run(batch, 0) == len(batch) and _one_set_of_columns(batch):
            return self._write_statement(batch)
        if len(batch) == 1:
            outcome, fired = self._write_alone(batch[0])
            return [outcome], fired
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.store.transaction(write=True) as tx:
                if all(job[4] is not None for job in batch):
                    # the rows first, in one order: each write would lock its task's row when it came to it,
                    # in the order of the requests, and two batches (threads, server processes) could then
                    # each hold a row the other waits for: a deadlock, which PostgreSQL notices only after a
                    # second. Only when every write says which task it changes: a write that may lock more
                    # (a batch request takes advisory locks first) keeps its own order.
                    tx.lock_task_rows([job[4] for job in batch if job[4] is not None])
                start = 0
                while start < len(batch):
                    end = self._progress_run(batch, start) if together else start + 1
                    if end - start > 1:
                        outcomes += self._write_progress(tx, batch[start:end])
                        start = end
                        continue
                    try:
                        with tx.savepoint():
                            outcomes.append((True, batch[start][0](tx)))
                    except Exception as exc:
                        outcomes.append((False, exc))
                    start += 1
                fired = tx.fired
        except Exception as exc:
            # the commit (or a savepoint) failed: nothing in this batch was written
            logger.exception("taskreport server: a batch of %d writes failed", len(batch))
            return [(False, exc)] * len(batch), 0
        return outcomes, fired

    @staticmethod
    def _progress_run(batch: list[_Job], start: int) -> int:
        """The end of the run of progress updates from ``start``: consecutive ones, to distinct tasks of one
        project (a task twice in one statement would get either value), so writing them together in one
        statement changes nothing but the count of round trips."""
        seen: set[str] = set()
        project = None
        end = start
        while end < len(batch):
            progress = batch[end][3]
            if progress is None or progress[1] in seen or project not in (None, progress[0].project_id):
                break
            seen.add(progress[1])
            project = progress[0].project_id
            end += 1
        return end

    def _write_progress(self, tx: Tx, run: list[_Job]) -> list[tuple[bool, Any]]:
        """A run of progress updates in one statement; each that it could not take (an unknown task, one with
        a live action) is written the ordinary way after, as it would have been alone."""
        items = [job[3] for job in run if job[3] is not None]
        try:
            with tx.savepoint():
                rows = tx.update_progress_many(items[0][0], [(task_id, fields) for _, task_id, fields in items])
        except Exception as exc:
            if self.store.conflict(exc):
                return [(False, exc)] * len(run)  # each runs again alone, as after any clash
            _statement_failed(exc, self.store.connection_lost(exc))
            rows = {}
        outcomes: list[tuple[bool, Any]] = []
        for job in run:
            assert job[3] is not None
            row = rows.get(job[3][1])
            if row is not None:
                outcomes.append((True, row))
                continue
            try:
                with tx.savepoint():
                    outcomes.append((True, job[0](tx)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def _write_statement(self, batch: list[_Job]) -> tuple[list[tuple[bool, Any]], int]:
        """A batch of progress updates alone, the commonest batch by far, as one statement that commits on its
        own (on PostgreSQL: one round trip, where a transaction with a savepoint took five). The updates it
        could not take (an unknown task, one with a live action) are then written the ordinary way."""
        items = [job[3] for job in batch if job[3] is not None]
        scope = items[0][0]
        try:
            with self.store.statement() as tx:
                if len(items) == 1:
                    row = tx.update_progress(scope, items[0][1], items[0][2])
                    rows = {} if row is None else {items[0][1]: row}
                else:
                    rows = tx.update_progress_many(scope, [(task_id, fields) for _, task_id, fields in items])
        except Exception as exc:
            if self.store.conflict(exc):
                return [(False, exc)] * len(batch), 0  # each runs again alone, as after any clash
            _statement_failed(exc, self.store.connection_lost(exc))
            rows = {}
        # the updates the statement could not take (a task with a live action, an unknown one), written the
        # ordinary way: together in one transaction, as they would have been without the statement
        rest = [job for job in batch if job[3] is not None and job[3][1] not in rows]
        written, fired = self._write(rest, together=False) if rest else ([], 0)
        theirs = iter(written)
        outcomes: list[tuple[bool, Any]] = []
        for job in batch:
            assert job[3] is not None
            row = rows.get(job[3][1])
            outcomes.append((True, row) if row is not None else next(theirs))
        return outcomes, fired

    def _write_alone(self, job: _Job) -> tuple[tuple[bool, Any], int]:
        """One write in its own transaction, without a savepoint: its failure rolls the transaction back,
        and a savepoint would only add two round trips."""
        wrote = False
        try:
            with self.store.transaction(write=True) as tx:
                value = job[0](tx)
                wrote = True
                fired = tx.fired
        except Exception as exc:
            if wrote:
                logger.exception("taskreport server: a write failed to commit")
            return (False, exc), 0
        return (True, value), fired

    @staticmethod
    def _answer(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_write, future, loop, _progress, _touches), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, jobs in by_loop.items():
            # RuntimeError: the loop closed while we wrote; nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)
