"""Two batches that change the same tasks in opposite orders (two server processes on one PostgreSQL) wait for
each other instead of deadlocking: a deadlock is noticed by PostgreSQL only after a second, and the writes it
undid are run again."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from writer_batches import Job, run_as_one_batch

from taskreport._errors import ValidationError
from taskreport._store import Scope, Tx, open_store
from taskreport.server._writer import Writer

pytestmark = pytest.mark.postgres

#: how long a write waits for its cue from the other batch: long enough for the other to give it, if it can
CUE = 1.0


def test_batches_changing_two_tasks_in_opposite_orders_never_deadlock(postgres_url: str) -> None:
    stores = [open_store(postgres_url), open_store(postgres_url)]  # a store each, as two processes would
    writers = [Writer(store, threads=1) for store in stores]
    for writer in writers:
        writer.start()
    with stores[0].transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        first, second = (tx.create_task(scope, {"name": name})["id"] for name in ("first", "second"))
    runs: Counter[tuple[str, str]] = Counter()
    cues = {name: threading.Event() for name in ("one has first", "two has second")}

    def change(batch: str, task_id: str, wait: str | None, then: str | None) -> Callable[[Tx], Any]:
        def write(tx: Tx) -> Any:
            runs[(batch, task_id)] += 1
            if wait is not None:
                cues[wait].wait(CUE)  # the other batch would be holding the other task by now, if it could
            row = tx.update_task(scope, task_id, {"data": {"by": batch}})
            if then is not None:
                cues[then].set()
            return row

        return write

    # batch one changes first then second; batch two second then first, each once the other holds its first
    one = [change("one", first, None, "one has first"), change("one", second, "two has second", None)]
    two = [change("two", second, "one has first", "two has second"), change("two", first, None, None)]
    held = [threading.Event(), threading.Event()]
    release = threading.Event()

    def hold(n: int) -> Callable[[Tx], None]:
        def write(tx: Tx) -> None:
            held[n].set()
            release.wait(10)

        return write

    async def scenario() -> list[Any]:
        holds = [asyncio.ensure_future(writer.run(hold(n))) for n, writer in enumerate(writers)]
        for event in held:
            await asyncio.to_thread(event.wait, 10)
        # queued while each writer is held: each batch is these two writes, in this order
        touched: list[tuple[Scope, str]] = [(scope, first), (scope, second), (scope, second), (scope, first)]
        jobs = [writers[0].run(one[0], touches=touched[0]), writers[0].run(one[1], touches=touched[1]),
                writers[1].run(two[0], touches=touched[2]), writers[1].run(two[1], touches=touched[3])]  # fmt: skip
        queued = [asyncio.ensure_future(job) for job in jobs]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*holds)
        return await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 30)

    try:
        answers = asyncio.run(scenario())
    finally:
        release.set()
        for writer in writers:
            writer.stop()
        with stores[0].transaction(write=False) as tx:
            final = {tx.get_task(scope, task_id)["data"]["by"] for task_id in (first, second)}
        for store in stores:
            store.close()
    assert [answer["data"] for answer in answers] == [{"by": "one"}, {"by": "one"}, {"by": "two"}, {"by": "two"}]
    # one batch waited for the other; no write was undone by a deadlock and run again
    assert runs == Counter({(b, t): 1 for b in ("one", "two") for t in (first, second)})
    assert len(final) == 1  # the later batch changed both tasks


def test_an_id_no_task_can_have_fails_its_own_write_not_its_batchs(postgres_url: str) -> None:
    store = open_store(postgres_url)
    writer = Writer(store, threads=1)
    writer.start()
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            first, second = (tx.create_task(scope, {"name": name})["id"] for name in ("first", "second"))

        def change(task_id: str) -> Job:
            return (lambda tx: tx.update_task(scope, task_id, {"data": {"n": 1}})), None, (scope, task_id)

        answers = run_as_one_batch(writer, [change(first), change("bad\x00id"), change(second)])
    finally:
        writer.stop()
        store.close()
    assert [answer["id"] for answer in (answers[0], answers[2])] == [first, second]
    assert isinstance(answers[1], ValidationError) and "NUL" in str(answers[1])
