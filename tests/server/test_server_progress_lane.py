"""On PostgreSQL the event loop writes progress updates itself (``ProgressLane``), in one statement for what
queued meanwhile; whatever it does not write (a task it doesn't know, one with a live action, a NUL in an id,
a failed statement) the caller hands to the writer, so every request still gets its own answer."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import requests
from writer_batches import tasks_and_a_watched_one

from taskreport._store import Scope, Store, open_store
from taskreport.server import _writer
from taskreport.server._progress import ProgressLane

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    opened = open_store(postgres_url)
    yield opened
    opened.close()


def _counting(store: Store) -> list[int]:
    """The sizes of the statements the store's event-loop path sends (the store's own, counted on the way)."""
    assert store.async_progress is not None
    sizes: list[int] = []
    real = store.async_progress.update_many

    async def counted(scope: Scope, items: Any) -> Any:
        sizes.append(len(items))
        return await real(scope, items)

    store.async_progress.update_many = counted  # type: ignore[method-assign]
    return sizes


def _values(store: Store, scope: Scope, ids: list[str]) -> list[Any]:
    with store.transaction(write=False) as tx:
        return [tx.get_task(scope, task_id)["value"] for task_id in ids]


def test_concurrent_updates_go_in_a_few_statements_and_each_gets_its_own_row(store: Store) -> None:
    scope, ids, watched = tasks_and_a_watched_one(store, 40)
    assert store.async_progress is not None
    lane = ProgressLane(store, store.async_progress)
    sizes = _counting(store)

    async def scenario() -> list[Any]:
        updates = [(task_id, n) for n, task_id in enumerate(ids)]
        # a task twice: its second update goes in a later statement, so the later value is the one kept
        updates += [(ids[0], 1000), (watched, 5), ("no-such-task", 6), ("nul\x00id", 7)]
        return await asyncio.gather(*(lane.write(scope, task_id, {"value": v}) for task_id, v in updates))

    answers = asyncio.run(scenario())
    assert [row["value"] for row in answers[:40]] == list(range(40))
    assert answers[40]["value"] == 1000 and answers[40]["id"] == ids[0]
    # not written by the lane: the caller takes these to the writer (live action, unknown task, NUL)
    assert answers[41:] == [None, None, None]
    assert _values(store, scope, ids) == [1000, *range(1, 40)]
    assert _values(store, scope, [watched]) == [None]
    # what queued while one statement was out went in the next: two statements, not forty-three
    assert sizes == [42, 1]


def test_a_closed_connection_sends_its_updates_to_the_writer_then_reconnects(
    store: Store, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskreport.server")
    scope, ids, _ = tasks_and_a_watched_one(store, 2)
    assert store.async_progress is not None
    lane = ProgressLane(store, store.async_progress)
    app = urllib.parse.parse_qs(urllib.parse.urlsplit(postgres_url).query)["application_name"][0]

    async def scenario() -> list[Any]:
        first = await lane.write(scope, ids[0], {"value": 1})
        # the database closes the lane's connection (a restart, an idle timeout)
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
                          " AND pid <> pg_backend_pid()", (app,))  # fmt: skip
        lost = await lane.write(scope, ids[1], {"value": 2})
        again = await lane.write(scope, ids[1], {"value": 3})
        return [first, lost, again]

    first, lost, again = asyncio.run(scenario())
    assert first["value"] == 1 and lost is None and again["value"] == 3
    assert _values(store, scope, ids) == [1, 3]
    # expected, so not an internal error (the suite fails a test that reports one), nothing logged as ERROR
    assert any("from the event loop failed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_database_that_refuses_connections_is_not_asked_again_for_a_while(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        scope, ids, _ = tasks_and_a_watched_one(store, 1)
        assert store.async_progress is not None
        # the same store, its event-loop path pointed at a port nothing listens on
        store.async_progress.url = "postgresql://postgres@127.0.0.1:9/none"
        lane = ProgressLane(store, store.async_progress)

        async def scenario() -> list[Any]:
            return [await lane.write(scope, ids[0], {"value": n}) for n in range(3)]

        assert asyncio.run(scenario()) == [None, None, None]
        assert not store.async_progress.available
    finally:
        store.close()


def test_patches_over_http_are_written_by_the_event_loop_and_answered_as_before(
    server_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real server: plain progress never reaches the writer; the rest still does, with the same
    answers (the row, a 404, a 400 naming the field)."""
    queued: list[Any] = []
    real_run = _writer.Writer.run

    async def run(self: Any, write: Any, progress: Any = None, touches: Any = None) -> Any:
        queued.append(progress[1] if progress else touches)
        return await real_run(self, write, progress, touches)

    monkeypatch.setattr(_writer.Writer, "run", run)
    server = server_factory("postgresql")
    session = requests.Session()
    session.headers.update(server.headers())
    ids = [session.post(server.tasks_url, json={"name": f"t{n}", "status": "processing"}).json()["id"]
           for n in range(3)]  # fmt: skip
    queued.clear()
    answers = [session.patch(f"{server.tasks_url}{task_id}/", json={"value": 10 + n}) for n, task_id in enumerate(ids)]
    assert [(a.status_code, a.json()["value"], a.json()["status"]) for a in answers] == [
        (200, 10, "processing"), (200, 11, "processing"), (200, 12, "processing")]  # fmt: skip
    assert queued == []
    missing = session.patch(f"{server.tasks_url}nope/", json={"value": 1})
    assert missing.status_code == 404
    bad = session.patch(f"{server.tasks_url}{ids[0]}/", json={"value": "many"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["attr"] == "value"
    assert queued == ["nope"]  # the unknown task went on to the writer, which answered the 404
    assert session.get(f"{server.tasks_url}{ids[2]}/").json()["value"] == 12


def test_updates_of_one_task_with_different_fields_are_written_in_arrival_order(store: Store) -> None:
    """Two updates of one task, setting different fields, queued together with another task's: the later
    arrival is written last (the statement for its set of fields may come first in the round)."""
    scope, ids, _ = tasks_and_a_watched_one(store, 2)
    assert store.async_progress is not None
    lane = ProgressLane(store, store.async_progress)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            lane.write(scope, ids[1], {"value": 1}),
            lane.write(scope, ids[0], {"value": 2, "value_max": 50}),
            lane.write(scope, ids[0], {"value": 3}),
        )

    answers = asyncio.run(scenario())
    assert [(row["value"], row["value_max"]) for row in answers] == [(1, 100), (2, 50), (3, 50)]
    with store.transaction(write=False) as tx:
        final = tx.get_task(scope, ids[0])
    assert (final["value"], final["value_max"]) == (3, 50)


def test_a_row_held_elsewhere_sends_its_statement_and_what_queued_behind_to_the_writer(
    store: Store, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction holding a task's row (a writer's batch, a batch request): the loop's statement gives up
    after its lock timeout instead of stalling every update behind it; its updates, and the later ones of the
    same tasks, go to the writer (None), in order; nothing is reported as an error."""
    caplog.set_level(logging.DEBUG, logger="taskreport.server")
    scope, ids, _ = tasks_and_a_watched_one(store, 3)
    assert store.async_progress is not None
    lane = ProgressLane(store, store.async_progress)
    holder = psycopg.connect(postgres_url)
    try:
        holder.execute("SELECT 1 FROM tasks WHERE public_id = %s FOR UPDATE", (ids[0],))

        async def scenario() -> list[Any]:
            first = [asyncio.ensure_future(lane.write(scope, task_id, {"value": 1})) for task_id in ids[:2]]
            await asyncio.sleep(0.01)  # the statement is out, waiting for the row
            behind = [asyncio.ensure_future(lane.write(scope, task_id, {"value": 2})) for task_id in ids]
            return await asyncio.wait_for(asyncio.gather(*first, *behind), 10)

        answers = asyncio.run(scenario())
    finally:
        holder.close()
    # the statement of ids[0] and ids[1] failed; behind it, their updates go to the writer too, ids[2]'s not
    assert [a if a is None else a["value"] for a in answers] == [None, None, None, None, 2]
    assert any("from the event loop failed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
