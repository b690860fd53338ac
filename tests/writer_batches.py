"""Writes made into one batch of the server's group-commit writer, and the tasks they write, for tests of what
a batch (or the event loop's progress statements) does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

from taskreport._store import Scope, Store, Tx
from taskreport.server._writer import Progress, Writer

#: a write as the server queues it: the write, the progress update it is (or None), the task it changes
Job = tuple[Callable[[Tx], Any], Progress | None, tuple[Scope, str] | None]


def tasks_and_a_watched_one(store: Store, count: int) -> tuple[Scope, list[str], str]:
    """``count`` plain tasks, and one with an action that may yet fire."""
    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        ids = [tx.create_task(scope, {"name": f"t{n}"})["id"] for n in range(count)]
        watched = tx.create_task(scope, {"name": "with an action"})["id"]
        tx.create_action(scope, watched, {"trigger": "success", "integration": "email",
                                          "config": {"to": "ops@example.com"}})  # fmt: skip
    return scope, ids, watched


def run_as_one_batch(writer: Writer, jobs: Sequence[Job]) -> list[Any]:
    """Queue ``jobs`` while the writer is held inside a write of its own, so that they come out as one batch;
    their answers (an exception for a write that raised), in order."""
    inside, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        inside.set()
        release.wait(10)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(writer.run(hold))
        await asyncio.to_thread(inside.wait, 10)
        queued = [asyncio.ensure_future(writer.run(write, progress, touches)) for write, progress, touches in jobs]
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 10)

    try:
        return asyncio.run(scenario())
    finally:
        release.set()
