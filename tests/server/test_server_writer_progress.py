"""The writer takes the progress updates of one batch together: each request still gets its own task's row or
its own error, and the store ends where the requests, in their order, would have left it one by one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from writer_batches import run_as_one_batch, tasks_and_a_watched_one

from taskreport._errors import NotFound, ValidationError
from taskreport._store import Scope, Tx, open_store
from taskreport.server._writer import Writer

Update = tuple[Callable[[Tx], Any], tuple[Scope, str, dict[str, int]]]


def _progress(scope: Scope, ran_alone: list[str]) -> Callable[[str, Any], Update]:
    """Progress updates as the server queues them; the ids of those written the ordinary way go to ran_alone."""

    def progress(task_id: str, value: int | dict[str, int]) -> Update:
        fields = value if isinstance(value, dict) else {"value": value}

        def write(tx: Tx) -> Any:
            ran_alone.append(task_id)
            return tx.update_progress(scope, task_id, fields) or tx.update_task(scope, task_id, fields)

        return write, (scope, task_id, fields)

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
    #: what the batch opened: single statements, and write transactions (the writer's hold not counted)
    statements: int
    transactions: int


def _run_batch(store_url: str, count: int, updates: Callable[[list[str], str, str], list[tuple[str, Any]]]) -> Batch:
    """``updates(ids, watched, dialect)`` (of ``count`` plain tasks and one with an action) as one batch; an
    update is ``(task id, value)`` or ``(task id, fields)``."""
    store = open_store(store_url)
    writer = Writer(store, threads=1)
    writer.start()
    opened = {"statements": 0, "transactions": 0}
    statement, transaction = store.statement, store.transaction

    @contextlib.contextmanager
    def counted_statement() -> Iterator[Tx]:
        opened["statements"] += 1
        with statement() as tx:
            yield tx

    @contextlib.contextmanager
    def counted_transaction(write: bool = True) -> Iterator[Tx]:
        opened["transactions"] += write
        with transaction(write) as tx:
            yield tx

    try:
        scope, ids, watched = tasks_and_a_watched_one(store, count)
        ran_alone: list[str] = []
        progress = _progress(scope, ran_alone)
        chosen = updates(ids, watched, store.dialect)
        store.statement, store.transaction = counted_statement, counted_transaction  # type: ignore[method-assign]
        answers = run_as_one_batch(writer, [(*progress(task_id, value), None) for task_id, value in chosen])
        store.statement, store.transaction = statement, transaction  # type: ignore[method-assign]
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
            fields = value if isinstance(value, dict) else {"value": value}
            assert (answer["id"], {k: answer[k] for k in fields}) == (task_id, fields)
    # the writer's hold was a write transaction of its own
    return Batch(chosen, answers, final, ran_alone, ids, watched, opened["statements"], opened["transactions"] - 1)


def test_a_batch_of_progress_updates_is_written_together_and_answered_one_by_one(store_url: str) -> None:
    def updates(ids: list[str], watched: str, dialect: str) -> list[tuple[str, int]]:
        return [(ids[0], 10), (ids[1], 20), (watched, 30), ("no-such-task", 40), (ids[0], 11), (ids[2], 33)]

    batch = _run_batch(store_url, 4, updates)
    ids, watched = batch.ids, batch.watched
    # the later update of a task is the one that stays, as if each had been written alone
    assert batch.final == {ids[0]: 11, ids[1]: 20, ids[2]: 33, ids[3]: None, watched: 30}
    # written together: only what one statement could not take ran on its own (a task with a live action, an
    # unknown task); the second update of a task began a new group instead. All in one transaction.
    assert sorted(batch.ran_alone) == sorted([watched, "no-such-task"])
    assert (batch.statements, batch.transactions) == (0, 1)


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
        # an id the database can not take fails the statement: then every write went the ordinary way
        assert sorted(batch.ran_alone) == sorted(task_id for task_id, _ in batch.updates)
    # one statement, then one transaction for all that it left (not one each)
    assert (batch.statements, batch.transactions) == (1, 1)


def test_progress_updates_of_different_fields_are_written_in_one_transaction(store_url: str) -> None:
    # two statements (one per set of fields) would each commit alone: a failure of the second would leave the
    # first written and its updates written again
    def updates(ids: list[str], watched: str, dialect: str) -> list[tuple[str, Any]]:
        return [(ids[0], 10), (ids[1], {"value": 2, "value_max": 4}), (ids[2], 30)]

    batch = _run_batch(store_url, 3, updates)
    assert batch.ran_alone == []
    assert (batch.statements, batch.transactions) == (0, 1)
    assert [batch.final[task_id] for task_id in batch.ids] == [10, 2, 30]


@pytest.mark.postgres
def test_a_statement_whose_connection_was_closed_is_written_again_on_a_new_one(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    caplog.set_level(logging.DEBUG, logger="taskreport.server")
    store = open_store(postgres_url)
    writer = Writer(store, threads=1)
    try:
        scope, ids, _ = tasks_and_a_watched_one(store, 2)
        # the pool's idle connections, closed by the database (a restart, an idle timeout)
        app = urllib.parse.parse_qs(urllib.parse.urlsplit(postgres_url).query)["application_name"][0]
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          (app,))  # fmt: skip
        progress = _progress(scope, [])

        async def scenario() -> list[Any]:
            # queued before the writer starts: its first batch is these two, written as one statement
            queued = [asyncio.ensure_future(writer.run(*progress(task_id, value))) for task_id, value in
                      [(ids[0], 10), (ids[1], 20)]]  # fmt: skip
            await asyncio.sleep(0)
            writer.start()
            return await asyncio.wait_for(asyncio.gather(*queued), 10)

        answers = asyncio.run(scenario())
        with store.transaction(write=False) as tx:
            final = [tx.get_task(scope, task_id)["value"] for task_id in ids]
    finally:
        writer.stop()
        store.close()
    assert [answer["value"] for answer in answers] == final == [10, 20]
    # the statement met the closed connection, and the updates went through again on a new one: no internal
    # error reported (the suite fails a test that reports one), no ERROR logged
    assert any("in one statement failed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
