"""The writer takes the progress updates of one batch together: each request still gets its own task's row or
its own error, and the store ends where the requests, in their order, would have left it one by one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from taskreport._errors import NotFound
from taskreport._store import Scope, Tx, open_store
from taskreport.server._writer import Writer


def test_a_batch_of_progress_updates_is_written_together_and_answered_one_by_one(store_url: str) -> None:
    store = open_store(store_url)
    writer = Writer(store, threads=1)
    writer.start()
    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        ids = [tx.create_task(scope, {"name": f"t{n}"})["id"] for n in range(4)]
        watched = tx.create_task(scope, {"name": "with an action"})["id"]
        tx.create_action(scope, watched, {"trigger": "success", "integration": "email",
                                          "config": {"to": "ops@example.com"}})  # fmt: skip
    # the writer waits inside a first write while the rest queue up, so they come out as one batch
    inside, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        inside.set()
        release.wait(10)

    ran_alone: list[str] = []

    def progress(task_id: str, value: int) -> tuple[Callable[[Tx], Any], tuple[Scope, str, dict[str, int]]]:
        def write(tx: Tx) -> Any:
            ran_alone.append(task_id)
            return tx.update_progress(scope, task_id, {"value": value}) or tx.update_task(scope, task_id,
                                                                                          {"value": value})
        return write, (scope, task_id, {"value": value})

    updates = [(ids[0], 10), (ids[1], 20), (watched, 30), ("no-such-task", 40), (ids[0], 11), (ids[2], 33)]

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(writer.run(hold))
        await asyncio.to_thread(inside.wait, 10)
        queued = [asyncio.ensure_future(writer.run(*progress(task_id, value))) for task_id, value in updates]
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 10)

    try:
        answers = asyncio.run(scenario())
        with store.transaction(write=False) as tx:
            final = {task_id: tx.get_task(scope, task_id)["value"] for task_id in [*ids, watched]}
    finally:
        release.set()
        writer.stop()
        store.close()
    for (task_id, value), answer in zip(updates, answers, strict=True):
        if task_id == "no-such-task":
            assert isinstance(answer, NotFound)
        else:
            assert (answer["id"], answer["value"]) == (task_id, value)
    # the later update of a task is the one that stays, as if each had been written alone
    assert final == {ids[0]: 11, ids[1]: 20, ids[2]: 33, ids[3]: None, watched: 30}
    # written together: only what one statement could not take ran on its own (a task with a live action, an
    # unknown task); the second update of a task began a new group instead
    assert sorted(ran_alone) == sorted([watched, "no-such-task"])
