"""The event loop's own lane for progress updates (PostgreSQL), beside the group-commit writer's threads.

A PATCH of ``value`` alone is most of a busy server's writes. The writer threads wait on the database well
enough, but a thread coming back with its batch's answers needs the GIL the event loop is busy with, so the
loop and the threads take turns instead of overlapping (persisted PATCH/s stayed near a third of the no-op
app's with one process). Here the loop sends those updates itself: what queued while one statement was out
goes in the next, one statement per project and set of fields, each committing on its own. Anything the lane
does not write (a task it doesn't know, one with a live action, a failed statement) goes to the writer as
before, which writes it the ordinary way and answers for it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from .. import _internal
from .._store import AsyncProgress, Scope, Store, TaskRow

logger = logging.getLogger("taskreport.server")

#: (project, task id, fields, the future the request awaits)
_Item = tuple[Scope, str, Mapping[str, Any], "asyncio.Future[TaskRow | None]"]


class _LoopState:
    __slots__ = ("drain", "pending")

    def __init__(self) -> None:
        self.pending: list[_Item] = []
        #: the task sending statements while there are updates pending; None when idle
        self.drain: asyncio.Task[None] | None = None


class ProgressLane:
    """Writes progress updates from the event loop through the store's :class:`AsyncProgress`."""

    def __init__(self, store: Store, progress: AsyncProgress, *, max_batch: int = 256) -> None:
        self.store = store
        self.progress = progress
        self.max_batch = max_batch
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    async def write(self, scope: Scope, task_id: str, fields: Mapping[str, Any]) -> TaskRow | None:
        """The task as written, or None when the lane did not write it: then the writer must."""
        if not self.progress.available or "\x00" in task_id:
            # a NUL the database refuses: the writer answers it with its own 400, without failing the others
            return None
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        future: asyncio.Future[TaskRow | None] = loop.create_future()
        state.pending.append((scope, task_id, fields, future))
        if state.drain is None:
            state.drain = loop.create_task(self._drain(state))
        return await future

    async def _drain(self, state: _LoopState) -> None:
        try:
            while state.pending:
                taken, state.pending = state.pending[: self.max_batch], state.pending[self.max_batch :]
                groups: dict[tuple[int, tuple[str, ...]], dict[str, _Item]] = {}
                again: list[_Item] = []
                for item in taken:
                    group = groups.setdefault((item[0].project_id, tuple(sorted(item[2]))), {})
                    if item[1] in group:
                        # a task twice in one statement would get either value: the later waits for the next
                        again.append(item)
                    else:
                        group[item[1]] = item
                state.pending[:0] = again
                for group in groups.values():
                    await self._send(list(group.values()))
        finally:
            state.drain = None
            # cancelled (the loop is closing): whoever still waits goes to the writer
            _settle(state.pending, {})
            state.pending = []

    async def _send(self, items: list[_Item]) -> None:
        rows: dict[str, TaskRow] = {}
        try:
            rows = await self.progress.update_many(items[0][0], [(item[1], item[2]) for item in items])
        except asyncio.CancelledError:
            _settle(items, {})
            raise
        except Exception as exc:
            self._failed(exc)
        _settle(items, rows)

    def _failed(self, exc: Exception) -> None:
        if self.store.connection_lost(exc) or self.store.conflict(exc):
            # the database restarted, or a concurrent batch held the rows: the writer takes these
            logger.debug("taskreport server: progress updates from the event loop failed (%r)", exc)
            return
        _internal.report("progress updates from the event loop failed; the writer writes them", exc)


def _settle(items: list[_Item], rows: Mapping[str, TaskRow]) -> None:
    for _scope, task_id, _fields, future in items:
        if not future.done():
            future.set_result(rows.get(task_id))
