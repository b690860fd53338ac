"""Group commit: one thread runs every write, committing whatever queued up meanwhile in one transaction.

SQLite allows one writer at a time and each commit costs a WAL append, so N concurrent requests that each
take the lock and commit in the thread pool mostly wait on each other. Here they queue instead; the writer
thread drains the queue, runs each write under its own savepoint (so one failing write is rolled back
alone) and commits the batch once. Callers get their result when the batch that holds their write has
committed, never before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .._errors import ServerError
from .._store import Store, Tx

logger = logging.getLogger("taskreport.server")

T = TypeVar("T")
_Job = tuple[Callable[[Tx], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
_STOP = object()


def unavailable() -> ServerError:
    # DRF's 503, in the seed's error format
    return ServerError("Service temporarily unavailable, try again later.", code="service_unavailable", status_code=503)


def _settle(jobs: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in jobs:
        if future.done():  # the request was abandoned (client went away)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Writer:
    def __init__(self, store: Store, *, max_batch: int = 256, on_commit: Callable[[], None] | None = None) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # set once stopping: from then on a write is refused instead of queued where no one takes it
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("the writer was stopped; make a new one")
        self._thread = threading.Thread(target=self._run, name="taskreport-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        else:
            self._refuse_queued()

    async def run(self, write: Callable[[Tx], T]) -> T:
        """Run ``write(tx)`` in the next batch; its exception, if any, is raised here. Once the writer is
        stopping, raises a 503 :class:`ServerError`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise unavailable()
            self._queue.put((write, future, loop))
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
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        """Answer the writes that were queued behind the stop with a 503, so that no request waits for a
        writer that is gone. ``run`` queues nothing once ``_closed`` is set, and this runs after that."""
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
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.store.transaction(write=True) as tx:
                for write, _future, _loop in batch:
                    try:
                        with tx.savepoint():
                            outcomes.append((True, write(tx)))
                    except Exception as exc:
                        outcomes.append((False, exc))
        except Exception as exc:
            # the commit (or a savepoint) failed: nothing in this batch was written
            logger.exception("taskreport server: a batch of %d writes failed", len(batch))
            outcomes = [(False, exc)] * len(batch)
        self._answer(batch, outcomes)
        if self.on_commit is not None:
            self.on_commit()

    @staticmethod
    def _answer(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_write, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, jobs in by_loop.items():
            # RuntimeError: the loop closed while we wrote; nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)
