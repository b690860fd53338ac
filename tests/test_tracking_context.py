"""``with task(...)`` / ``async with task(...)``, and the current task following the code into threads
(started with a copied context) and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from recorded import only, records

import taskreport
from taskreport import Status, ValidationError
from taskreport.testing import TaskRecorder


class Boom(Exception):
    pass


def test_block_success_with_progress_and_fields(taskreport_tasks: TaskRecorder) -> None:
    with taskreport.task("import", tags={"src": "s3"}, value_max=10) as t:
        assert isinstance(t, taskreport.Task)
        assert taskreport.current_task() is t
        t.increment(4)
        t.increment()
        t.update(data={"rows": 5})
    assert taskreport.current_task() is None
    record = taskreport_tasks.get("import")
    assert record.status is Status.SUCCESS
    assert (record.value, record.value_max, record.value_percent) == (5, 10, 50)
    assert (record.tags, record.data) == ({"src": "s3"}, {"rows": 5})
    assert record.start_time is not None and record.end_time is not None


def test_block_error_is_recorded_and_the_exception_propagates(taskreport_tasks: TaskRecorder) -> None:
    exc = Boom("bad row 12")
    with pytest.raises(Boom) as info, taskreport.task("parse"):
        raise exc
    assert info.value is exc
    record = taskreport_tasks.get("parse")
    assert record.status is Status.ERROR
    assert record.data["message"] == "bad row 12"
    assert taskreport.current_task() is None


def test_block_interrupted_is_cancelled(taskreport_tasks: TaskRecorder) -> None:
    with pytest.raises(KeyboardInterrupt), taskreport.task("interrupted"):
        raise KeyboardInterrupt
    assert taskreport_tasks.get("interrupted").status is Status.CANCELLED


def test_nested_blocks_are_parent_and_child(taskreport_tasks: TaskRecorder) -> None:
    with taskreport.task("outer") as outer:
        with taskreport.task("inner") as inner:
            assert taskreport.current_task() is inner
        assert taskreport.current_task() is outer
    assert taskreport_tasks.children("outer") == [taskreport_tasks.get("inner")]


def test_grandchildren_become_siblings() -> None:
    # the service nests one level deep
    with taskreport.task("top"), taskreport.task("middle"), taskreport.task("bottom"):
        pass
    top = only("top")
    assert only("middle").parent == top.id and only("bottom").parent == top.id


def test_one_task_object_can_be_reused_and_reentered() -> None:
    block = taskreport.task("again")
    with block as first:
        with block as second:
            assert taskreport.current_task() is second
        assert taskreport.current_task() is first
    with block:
        pass
    assert [r.status for r in records(name="again")] == [Status.SUCCESS] * 3


def test_task_as_a_decorator() -> None:
    @taskreport.task("decorated-block", tags={"k": "vv"})
    def work() -> int:
        return 3

    assert work() == 3
    assert only("decorated-block").tags == {"k": "vv"}


def test_bad_fields_raise_when_the_block_is_written() -> None:
    with pytest.raises(ValidationError) as info:
        taskreport.task("x", max_runtime=0)
    assert info.value.attr == "max_runtime"


async def test_async_block_success_error_and_cancel() -> None:
    async with taskreport.task("async-ok") as t:
        await asyncio.sleep(0)
        assert taskreport.current_task() is t
    with pytest.raises(Boom):
        async with taskreport.task("async-bad"):
            raise Boom

    started = asyncio.Event()

    async def waits() -> None:
        async with taskreport.task("async-cancelled"):
            started.set()
            await asyncio.sleep(60)

    running = asyncio.create_task(waits())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert only("async-ok").status is Status.SUCCESS
    assert only("async-bad").status is Status.ERROR
    assert only("async-cancelled").status is Status.CANCELLED


# -- across threads and asyncio tasks ----------------------------------------------------------------------
def test_current_task_follows_a_copied_context_into_threads() -> None:
    seen: list[Any] = []

    @taskreport.track(name="in-thread")
    def in_thread() -> None:
        pass

    def worker() -> None:
        seen.append(taskreport.current_task())
        in_thread()

    with taskreport.task("main-thread") as main:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # a pool, with the context copied per submission
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(contextvars.copy_context().run, worker) for _ in range(2)]:
                future.result()
    assert seen == [main] * 5
    main_id = only("main-thread").id
    children = records(name="in-thread")
    assert len(children) == 5 and {c.parent for c in children} == {main_id}


def test_a_thread_without_the_context_has_no_current_task() -> None:
    seen: list[Any] = []
    with taskreport.task("alone"):
        thread = threading.Thread(target=lambda: seen.append(taskreport.current_task()))
        thread.start()
        thread.join()
    assert seen == [None]


async def test_current_task_follows_asyncio_tasks_and_each_task_keeps_its_own() -> None:
    seen: dict[str, Any] = {}

    @taskreport.track(name="leaf")
    async def leaf() -> None:
        await asyncio.sleep(0)

    async def branch(label: str) -> None:
        async with taskreport.task(label) as mine:
            await asyncio.sleep(0)
            # the other branch ran in between, yet this task is still ours
            seen[label] = (mine, taskreport.current_task())
            await asyncio.create_task(leaf())

    async with taskreport.task("root") as root:
        await asyncio.gather(branch("left"), branch("right"))
        assert taskreport.current_task() is root
    for label in ("left", "right"):
        mine, current = seen[label]
        assert mine is current
    root_id = only("root").id
    assert only("left").parent == root_id and only("right").parent == root_id
    # leaves are grandchildren of root: one level deep, they hang from root too
    leaves = records(name="leaf")
    assert len(leaves) == 2 and {leaf_.parent for leaf_ in leaves} == {root_id}


async def test_to_thread_carries_the_current_task() -> None:
    async with taskreport.task("async-parent") as parent:
        found = await asyncio.to_thread(taskreport.current_task)
    assert found is parent
