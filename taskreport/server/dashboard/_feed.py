"""The live feed: one walk of "changed since" per server process, fanned out to every open page.

A thread of its own polls the store every ``interval`` seconds while at least one page listens (and not at
all otherwise), for the watched projects' tasks whose ``updated`` is after the previous poll, less
``lookback`` seconds: a transaction that stamped its rows before the previous poll but committed after it is
still seen (as long as it took less than ``lookback``), and rows seen already are left out by their
``(row, updated)``. Whoever wrote the change (this process's API, another server process, a library on the
embedded store) makes no difference: the database is the source. On SQLite the poll costs nothing while
nothing was committed (``PRAGMA data_version``).

What a poll finds is grouped by project and handed to the event loop, where each listener's queue gets its
share (a task page: the task and its children; a public page: one task, fewer fields). A listener that falls
``MAX_QUEUED`` batches behind is told to reload instead of being buffered without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..._store import Row, Store
from ..._store._dashboard import changed_since

logger = logging.getLogger("taskreport.server.dashboard")

#: batches a listener may have waiting before it is told to reload
MAX_QUEUED = 64
#: rows one query returns at most; more changed rows are read in further queries of the same poll
CHUNK = 5000
#: queries one poll makes at most before it tells every listener to reload
MAX_CHUNKS = 20
#: what a listener is handed when it must reload
RESYNC = b""


def _ms(epoch: float | None) -> float | None:
    return None if epoch is None else round(epoch, 3)


def encode(rows: list[Row], *, newer_than: float | None = None, public: bool = False) -> bytes:
    """The Server-Sent Event a page's script gets for a poll's changed tasks, ready to write (the same bytes
    for every page of a project that takes them all). Each task is a short array, since every open page gets
    every change: ``[id, status, value, value_max, updated, start_time, end_time]`` (times in epoch seconds,
    to the millisecond), and for a task created after ``newer_than`` (one a page may not show yet) an eighth
    item, ``{"name", "created", "tags", "parent"}``, to show it with. JSON without indentation holds no line
    break, so the event is one ``data:`` line."""
    items: list[list[Any]] = []
    for r in rows:
        item: list[Any] = [r["id"], r["status"], r["value"], r["value_max"], _ms(r["updated"]), _ms(r["start_time"]),
                           _ms(r["end_time"])]  # fmt: skip
        if newer_than is not None and r["created"] > newer_than:
            extra = {"name": r["name"], "created": _ms(r["created"])}
            if not public:
                extra.update(tags=r["tags"], parent=r["parent"])
            item.append(extra)
        items.append(item)
    data = json.dumps(items, separators=(",", ":"))
    return b"event: tasks\r\ndata: " + data.encode() + b"\r\n\r\n"


class Listener:
    """One open page's share of the feed."""

    def __init__(self, project_id: int, *, task: str | None = None, public: bool = False,
                 details: bool = False) -> None:  # fmt: skip
        self.project_id = project_id
        self.task = task
        self.public = public
        self.details = details
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self.behind = False
        self.closed = False

    def offer(self, rows: list[Row], shared: Callable[[], bytes], newer_than: float) -> None:
        """Hand over a poll's changes to this listener's project: ``shared()`` is their encoding, made once
        for all the listeners that take every row."""
        if self.task is not None:
            rows = [r for r in rows if r["id"] == self.task or r["parent"] == self.task]
            if not rows:
                return
            data = encode(rows, newer_than=newer_than, public=self.public and not self.details)
        else:
            data = shared()
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.behind = True

    def resync(self) -> None:
        self.behind = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(RESYNC)

    def close(self) -> None:
        """End the page's stream (the server is stopping), waking it if it waits."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(RESYNC)


class ChangeFeed:
    """Polls the store for the listeners of one server process."""

    def __init__(self, store: Store, *, interval: float = 0.5, lookback: float = 5.0, idle: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.interval = interval
        self.lookback = lookback
        self.idle = idle
        self._clock = clock
        self._listeners: dict[int, set[Listener]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        #: polls made and rows handed out (for tests and the bench)
        self.polls = 0
        self.queries = 0

    # -- listeners (event loop) --------------------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._listeners.setdefault(listener.project_id, set()).add(listener)
            if self._thread is None or not self._thread.is_alive() or self._loop is not loop:
                self._loop = loop
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, args=(loop,), name="taskreport-dashboard-feed",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def leave(self, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(listener.project_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[listener.project_id]

    @property
    def listening(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._listeners.values())

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _deliver(self, changes: dict[int, list[Row]] | None) -> None:
        with self._lock:
            if changes is None:
                everyone = [lst for group in self._listeners.values() for lst in group]
                groups = []
            else:
                everyone = []
                groups = [(rows, list(self._listeners.get(pid, ()))) for pid, rows in changes.items()]
        for listener in everyone:
            listener.resync()
        # a task made in the last moments may be on no page yet: it comes with what it takes to show it
        newer_than = self._clock() - 2 * self.lookback
        for rows, listeners in groups:
            cache: list[bytes] = []

            def shared(rows: list[Row] = rows, cache: list[bytes] = cache) -> bytes:
                if not cache:
                    cache.append(encode(rows, newer_than=newer_than))
                return cache[0]

            for listener in listeners:
                listener.offer(rows, shared, newer_than)

    # -- the poller (its own thread, its own connection) -------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        seen: dict[int, float] = {}
        previous = self._clock()
        version: Any = None
        quiet_since: float | None = None
        while not self._stop.wait(self.interval):
            with self._lock:
                projects = sorted(self._listeners)
                if self._thread is not threading.current_thread():
                    return  # replaced (another event loop took over)
                if not projects:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > self.idle:
                        self._thread = None
                        return
                    continue
            quiet_since = None
            started = self._clock()
            try:
                changes, version = self._poll(projects, previous - self.lookback, seen, version)
            except Exception as exc:  # the database went away for a moment: try again next time
                logger.warning("taskreport dashboard: the live feed could not read the store: %s", exc)
                continue
            previous = started
            # rows older than the window can not come back in a query: forget them
            horizon = started - 2 * self.lookback
            if len(seen) > 1000:
                for pk in [pk for pk, updated in seen.items() if updated < horizon]:
                    del seen[pk]
            if changes is None or changes:
                try:
                    loop.call_soon_threadsafe(self._deliver, changes)
                except RuntimeError:  # the event loop is closed: the server has stopped
                    return

    def _poll(self, projects: list[int], since: float, seen: dict[int, float],
              version: Any) -> tuple[dict[int, list[Row]] | None, Any]:  # fmt: skip
        self.polls += 1
        with self.store.transaction(write=False) as tx:
            if self.store.dialect == "sqlite":
                # changes by any other connection (this process's writer included) move it; nothing else does
                now_version = tx.cur.scalar("PRAGMA data_version")
                if now_version == version and version is not None:
                    return {}, version
                version = now_version
            changes: dict[int, list[Row]] = {}
            for _ in range(MAX_CHUNKS):
                self.queries += 1
                rows = changed_since(tx.cur, since, projects, CHUNK)
                for row in rows:
                    if seen.get(row["pk"]) == row["updated"]:
                        continue
                    seen[row["pk"]] = row["updated"]
                    changes.setdefault(row["project_id"], []).append(row)
                if len(rows) < CHUNK:
                    return changes, version
                # rows stamped in the same instant as the chunk's last are read again, and left out as seen
                since = rows[-1]["updated"] - 1e-6
            return None, version
