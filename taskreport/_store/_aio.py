"""Progress updates written from an event loop (PostgreSQL): the server's commonest write, without a thread.

A server's writes go through writer threads, each waiting on the database with the GIL let go. A thread that
comes back from the database needs the GIL while the event loop, parsing the next requests, holds it: the
answer waits for the loop to let go, and the loop for the answer. A progress update is one statement that
commits on its own, so the loop can send it itself, on a connection of its own, and await it like any other
socket; the loop then never waits on a thread. Only PostgreSQL: SQLite has no socket to await.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import _bulk
from ._postgres import numbered
from ._rows import Scope, TaskRow, task_out

#: after the connection could not be made, how long writes go the ordinary way before the next try
RETRY_CONNECT_AFTER = 1.0
#: how long a statement waits for a row another transaction holds (a writer's batch, a batch request) before
#: it gives up and its updates go the ordinary way: the loop's one connection must not stall every update
LOCK_TIMEOUT_MS = 50


class AsyncProgress:
    """Writes qualifying progress updates (see ``Tx.progress_only``) in one statement from an event loop.

    One connection per event loop, opened at the first write and again after it is lost. Any failure is
    raised to the caller, which writes the same updates the ordinary way: this is a faster path, never the
    only one."""

    def __init__(self, url: str) -> None:
        self.url = url
        # by loop, held until the loop is found closed: a connection dropped unclosed would warn and keep its socket
        self._conns: dict[asyncio.AbstractEventLoop, Any] = {}
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._pid = os.getpid()
        self._failed_at = 0.0
        #: set when this loop can't have such a connection at all (Windows' proactor loop): never tried again
        self._unusable = False
        self._closed = False

    @property
    def available(self) -> bool:
        """False while a recent connection attempt failed (the database is down or refusing): then the
        ordinary way is taken at once instead of waiting on another attempt per write."""
        return not (self._closed or self._unusable) and time.monotonic() - self._failed_at >= RETRY_CONNECT_AFTER

    async def update_many(self, scope: Scope, items: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, TaskRow]:
        """The items (distinct task ids of ``scope``, each qualifying) written, as ``Tx.update_progress_many``
        would: the rows written by id; the ids absent were not written (unknown, or a task with a live
        action). Raises what the database raised: nothing of that set of fields is written then (each set is
        one statement that commits on its own; the server sends one set at a time)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            # a forked child: the parent's connections are the parent's (closing them here would end its
            # sessions); they are forgotten, never used
            self._conns, self._locks = {}, {}
            self._pid = os.getpid()
        lock = self._locks.get(loop)
        if lock is None:
            self._forget_closed_loops()
            lock = self._locks[loop] = asyncio.Lock()
        out: dict[str, TaskRow] = {}
        # one statement at a time on the connection: psycopg takes one per connection
        async with lock:
            conn = await self._connection(loop)
            try:
                for query, params in _bulk.returning_statements("postgresql", scope, items, time.time()):
                    cursor = await conn.execute(numbered(query), params)
                    for row in await cursor.fetchall():
                        out[row["public_id"]] = task_out(row, scope)
            except BaseException:
                if conn.closed or conn.broken:
                    self._conns.pop(loop, None)
                raise
        return out

    async def _connection(self, loop: asyncio.AbstractEventLoop) -> Any:
        conn = self._conns.get(loop)
        if conn is not None and not conn.closed:
            return conn
        import psycopg
        from psycopg.rows import dict_row

        try:
            # a raw cursor takes PostgreSQL's own $1 placeholders as they are: psycopg would otherwise parse every
            # statement past 50 parameters anew (it caches only smaller ones), a few microseconds per update
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, row_factory=dict_row, cursor_factory=psycopg.AsyncRawCursor
            )
        except psycopg.OperationalError:
            self._failed_at = time.monotonic()  # the database is down or refusing: tried again later
            raise
        except Exception:
            self._unusable = True  # not the database's doing (an event loop psycopg can't use): never again
            raise
        try:
            await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        except BaseException:
            _finish(conn)
            raise
        self._conns[loop] = conn
        return conn

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._locks if loop.is_closed()]:
            self._locks.pop(loop, None)
            _finish(self._conns.pop(loop, None))

    def close(self) -> None:
        """Close every connection (from any thread; the loops may be gone): the store is closing."""
        self._closed = True
        conns, self._conns, self._locks = list(self._conns.values()), {}, {}
        if self._pid == os.getpid():
            for conn in conns:
                _finish(conn)


def _finish(conn: Any) -> None:
    # the libpq connection itself: AsyncConnection.close() needs its loop, which may have ended
    if conn is not None and not conn.closed:
        conn.pgconn.finish()
