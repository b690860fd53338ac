"""The writer takes the progress updates of one batch together: each request still gets its own task's row or
its own error, and the store ends where the requests, in their order, would have left it one by one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from writer_batches import run_as_one_batch

from taskreport._errors import NotFound, ValidationError
from taskreport._store import Scope, Store, Tx, open_store
from taskreport.server._writer import Writer


def _tasks(store: Store, count: int) -> tuple[Scope, list[str], str]:
    """``count`` plain tasks, and one with an action that may yet fire."""
    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        ids = [tx.create_task(scope, {"name": f"t{n}"})["id"] for n in range(count)]
        watched = tx.create_task(scope, {"name": "with an action"})["id"]
        tx.create_action(scope, watched, {"trigger": "success", "integration": "email",
                                          "config": {"to": "ops@example.com"}})  # fmt: skip
    return scope, ids, watched


Update = tuple[Callable[[Tx], Any], tuple[Scope, str, dict[str, int]]]


def _progress(scope: Scope, ran_alone: list[str]) -> Callable[[str, int], Update]:
    """Progress updates as the server queues them; the ids of those written the ordinary way go to ran_alone."""

    def progress(task_id: str, value: int) -> Update:
        def write(tx: Tx) -> Any:
            ran_alone.append(task_id)
            return tx.update_progress(scope, task_id, {"value": value}) or tx.update_task(scope, task_id,
                                                                                          {"value": value})
        return write, (scope, task_id, {"value": value})

    return progress


@dataclasses.dataclass
class Batch:
    updates: list[tuple[str, int]]
    answers: list[Any]
    #: each task's value after the batch
    final: dict[str, Any]
    #: the tasks whose update was written the ordinary way, not with the others in one statement
    ran_alone: list[str]
    ids: list[str]
    watched: str


def _run_batch(store_url: str, count: int, updates: Callable[[list[str], str, str], list[tuple[str, int]]]) -> Batch:
    """``updates(ids, watched, dialect)`` (of ``count`` plain tasks and one with an action) as one batch."""
    store = open_store(store_url)
    writer = Writer(store, threads=1)
    writer.start()
    try:
        scope, ids, watched = _tasks(store, count)
        ran_alone: list[str] = []
        progress = _progress(scope, ran_alone)
        chosen = updates(ids, watched, store.dialect)
        answers = run_as_one_batch(writer, [(*progress(task_id, value), None) for task_id, value in chosen])
        with store.transaction(write=False) as tx:
            final = {task_id: tx.get_task(scope, task_id)["value"] for task_id in [*ids, watched]}
    finally:
        writer.stop()
        store.close()
    for (task_id, value), answer in zip(chosen, answers, strict=True):
        if task_id == "no-such-task":
            assert isinstance(answer, NotFound)
        elif "\x00" in task_id:
            assert isinstance(answer, ValidationError)
        else:
            assert (answer["id"], answer["value"]) == (task_id, value)
    return Batch(chosen, answers, final, ran_alone, ids, watched)


def test_a_batch_of_progress_updates_is_written_together_and_answered_one_by_one(store_url: str) -> None:
    def updates(ids: list[str], watched: str, dialect: str) -> list[tuple[str, int]]:
        return [(ids[0], 10), (ids[1], 20), (watched, 30), ("no-such-task", 40), (ids[0], 11), (ids[2], 33)]

    batch = _run_batch(store_url, 4, updates)
    ids, watched = batch.ids, batch.watched
    # the later update of a task is the one that stays, as if each had been written alone
    assert batch.final == {ids[0]: 11, ids[1]: 20, ids[2]: 33, ids[3]: None, watched: 30}
    # written together: only what one statement could not take ran on its own (a task with a live action, an
    # unknown task); the second update of a task began a new group instead
    assert sorted(batch.ran_alone) == sorted([watched, "no-such-task"])


@pytest.mark.parametrize("bad_id", [False, True], ids=["plain", "with-a-nul-in-an-id"])
def test_a_batch_of_progress_updates_alone_is_one_statement_and_each_still_gets_its_answer(
    store_url: str, bad_id: bool
) -> None:
    def updates(ids: list[str], watched: str, dialect: str) -> list[tuple[str, int]]:
        # distinct tasks, progress only: the whole batch is one statement, which commits on its own
        chosen = [(ids[0], 10), (watched, 30), ("no-such-task", 40), (ids[1], 20)]
        if bad_id:
            if dialect != "postgresql":
                pytest.skip("only PostgreSQL refuses a NUL in text")
            chosen.append(("bad\x00id", 50))  # refused before it reaches the database: the others still go
        return chosen

    batch = _run_batch(store_url, 3, updates)
    ids, watched = batch.ids, batch.watched
    assert batch.final == {ids[0]: 10, ids[1]: 20, ids[2]: None, watched: 30}
    if not bad_id:
        # the statement took the plain tasks; the task with a live action and the unknown one went the ordinary way
        assert sorted(batch.ran_alone) == sorted([watched, "no-such-task"])
    else:
        # an id the database can not take fails the statement: then every write went the ordinary way, alone
        assert sorted(batch.ran_alone) == sorted(task_id for task_id, _ in batch.updates)
