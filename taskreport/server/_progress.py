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
                groups: dict[tuple[int, tuple[str, ...]], list[_Item]] = {}
                seen: set[tuple[int, str]] = set()
                again: list[_Item] = []
                for item in taken:
                    key = (item[0].project_id, item[1])
                    if key in seen:
                        # a task twice in one round: in one statement either value could stay, and its two sets
                        # of fields would be two statements in no set order. The later waits for the next round
                        again.append(item)
                        continue
                    seen.add(key)
                    groups.setdefault((item[0].project_id, tuple(sorted(item[2]))), []).append(item)
                state.pending[:0] = again
                try:
                    for group in groups.values():
                        if not await self._send(group):
                            # these go to the writer: so do the updates of the same tasks queued behind them,
                            # which the loop would otherwise write first
                            keys = {(item[0].project_id, item[1]) for item in group}
                            behind, state.pending = _split(state.pending, keys)
                            _settle(behind, {})
                finally:
                    # every update this round took is answered, even when the round ended early (cancelled, or
                    # a hook re-raising an internal error): None sends it to the writer
                    _settle([item for group in groups.values() for item in group], {})
        finally:
            state.drain = None
            # cancelled (the loop is closing): whoever still waits goes to the writer
            _settle(state.pending, {})
            state.pending = []

    async def _send(self, items: list[_Item]) -> bool:
        """Write ``items`` in one statement and answer each; False when the statement failed."""
        try:
            rows = await self.progress.update_many(items[0][0], [(item[1], item[2]) for item in items])
        except Exception as exc:
            _settle(items, {})
            self._failed(exc)
            return False
        _settle(items, rows)
        return True

    def _failed(self, exc: Exception) -> None:
        if self.store.connection_lost(exc) or self.store.conflict(exc):
            # the database restarted, or a concurrent transaction held the rows too long: the writer takes these
            logger.debug("taskreport server: progress updates from the event loop failed (%r)", exc)
            return
        _internal.report("progress updates from the event loop failed; the writer writes them", exc)


def _split(items: list[_Item], keys: set[tuple[int, str]]) -> tuple[list[_Item], list[_Item]]:
    """``items`` of the tasks ``keys`` names, and the others (each list in its order)."""
    mine: list[_Item] = []
    others: list[_Item] = []
    for item in items:
        (mine if (item[0].project_id, item[1]) in keys else others).append(item)
    return mine, others


def _settle(items: list[_Item], rows: Mapping[str, TaskRow]) -> None:
    for _scope, task_id, _fields, future in items:
        if not future.done():
            future.set_result(rows.get(task_id))
