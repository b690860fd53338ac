"""``@track`` on every kind of callable: what gets recorded on success, error and cancellation, and that the
decorated callable behaves exactly like the original (values, exceptions, introspection)."""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from recorded import only, records

import taskreport
from taskreport import Status, ValidationError


# -- plain functions -----------------------------------------------------------------------------------
@taskreport.track
def double(x: int, *, times: int = 2) -> list[int]:
    """Doubles things."""
    return [x] * times


class Boom(Exception):
    pass


def test_success_records_a_finished_task_named_after_the_function() -> None:
    result = double(3, times=2)
    assert result == [3, 3]
    record = only(f"{__name__}.double")
    assert record.status is Status.SUCCESS
    assert record.start_time is not None and record.end_time is not None
    assert record.start_time <= record.end_time
    assert record.parent is None


def test_return_value_is_the_same_object() -> None:
    sentinel = object()

    @taskreport.track
    def give() -> object:
        return sentinel

    assert give() is sentinel


def test_error_records_the_exception_and_reraises_it_untouched() -> None:
    raised: list[BaseException] = []

    @taskreport.track(name="fails")
    def fails() -> None:
        exc = Boom("disk full")
        raised.append(exc)
        raise exc

    with pytest.raises(Boom) as info:
        fails()
    assert info.value is raised[0]
    # the traceback still ends in the user's own frame, where it was raised
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "fails"
    record = only("fails")
    assert record.status is Status.ERROR
    assert record.data["exception"] == f"{__name__}.Boom"
    assert record.data["message"] == "disk full"
    assert "raise exc" in record.data["traceback"]


def test_keyboard_interrupt_cancels_and_propagates() -> None:
    @taskreport.track(name="interrupted")
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert only("interrupted").status is Status.CANCELLED


def test_sys_exit_zero_is_success_and_nonzero_is_error() -> None:
    @taskreport.track(name="exits")
    def exits(code: int) -> None:
        sys.exit(code)

    with pytest.raises(SystemExit):
        exits(0)
    with pytest.raises(SystemExit):
        exits(3)
    assert sorted(r.status.value for r in records(name="exits")) == ["error", "success"]


def test_each_call_is_its_own_task_with_the_decorators_fields() -> None:
    @taskreport.track(name="tagged", tags={"team": "ops"}, queue="batch", data={"kind": "nightly"})
    def tagged() -> None:
        pass

    tagged()
    tagged()
    found = records(name="tagged")
    assert len(found) == 2
    for record in found:
        assert (record.tags, record.queue, record.data) == ({"team": "ops"}, "batch", {"kind": "nightly"})


def test_name_can_be_given_positionally() -> None:
    @taskreport.track("by-position")
    def f() -> int:
        return 1

    assert f() == 1
    assert only("by-position").status is Status.SUCCESS


def test_task_is_current_while_the_body_runs_and_nested_calls_are_children() -> None:
    seen: dict[str, Any] = {}

    @taskreport.track(name="inner")
    def inner() -> None:
        seen["inner"] = taskreport.current_task()

    @taskreport.track(name="outer")
    def outer() -> None:
        seen["outer"] = taskreport.current_task()
        inner()
        seen["after"] = taskreport.current_task()

    outer()
    assert taskreport.current_task() is None
    assert seen["outer"] is seen["after"] and seen["inner"] is not seen["outer"]
    outer_record, inner_record = only("outer"), only("inner")
    assert inner_record.parent == outer_record.id
    assert seen["outer"].id == outer_record.id


# -- methods --------------------------------------------------------------------------------------------
class Repo:
    def __init__(self, name: str) -> None:
        self.name = name

    @taskreport.track
    def method(self, suffix: str) -> str:
        return self.name + suffix

    @taskreport.track
    @classmethod
    def class_outer(cls, x: int) -> tuple[type, int]:
        return cls, x

    @classmethod
    @taskreport.track
    def class_inner(cls, x: int) -> tuple[type, int]:
        return cls, x

    @taskreport.track
    @staticmethod
    def static_outer(x: int) -> int:
        return x + 1

    @staticmethod
    @taskreport.track
    def static_inner(x: int) -> int:
        return x + 2

    @taskreport.track
    async def amethod(self) -> str:
        return self.name


class SubRepo(Repo):
    pass


def test_methods_classmethods_and_staticmethods() -> None:
    repo = Repo("r")
    assert repo.method("!") == "r!"
    assert Repo.method(repo, "?") == "r?"
    assert Repo.class_outer(1) == (Repo, 1)
    assert SubRepo.class_outer(2) == (SubRepo, 2)
    assert repo.class_inner(3) == (Repo, 3)
    assert Repo.static_outer(1) == 2 and repo.static_outer(1) == 2
    assert Repo.static_inner(1) == 3
    assert asyncio.run(repo.amethod()) == "r"
    counts: dict[str, int] = {}
    for record in records():
        assert record.status is Status.SUCCESS
        counts[record.name] = counts.get(record.name, 0) + 1
    prefix = f"{__name__}.Repo."
    assert counts == {
        prefix + "method": 2,
        prefix + "class_outer": 2,
        prefix + "class_inner": 1,
        prefix + "static_outer": 2,
        prefix + "static_inner": 1,
        prefix + "amethod": 1,
    }


# -- introspection ----------------------------------------------------------------------------------------
def plain(a: int, b: str = "x", *args: int, c: float = 1.0, **kw: Any) -> str:
    """Plain doc."""
    return b


async def coro(a: int) -> int:
    """Coro doc."""
    return a


def gen(n: int) -> Iterator[int]:
    """Gen doc."""
    yield n


async def agen(n: int) -> AsyncIterator[int]:
    """Agen doc."""
    yield n


@pytest.mark.parametrize("func", [plain, coro, gen, agen])
def test_decorated_callables_look_like_the_original(func: Any) -> None:
    wrapped = taskreport.track(func)
    assert inspect.signature(wrapped) == inspect.signature(func)
    assert wrapped.__doc__ == func.__doc__
    assert wrapped.__name__ == func.__name__ and wrapped.__qualname__ == func.__qualname__
    assert wrapped.__wrapped__ is func
    for check in (
        inspect.iscoroutinefunction,
        inspect.isgeneratorfunction,
        inspect.isasyncgenfunction,
        asyncio.iscoroutinefunction,
    ):
        assert check(wrapped) == check(func), check


# -- coroutines --------------------------------------------------------------------------------------------
async def test_coroutine_success_error_and_children() -> None:
    @taskreport.track(name="child")
    async def child(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @taskreport.track(name="parent")
    async def parent() -> list[int]:
        return list(await asyncio.gather(child(1), child(2)))

    @taskreport.track(name="broken")
    async def broken() -> None:
        await asyncio.sleep(0)
        raise Boom("async boom")

    assert await parent() == [2, 4]
    with pytest.raises(Boom, match="async boom"):
        await broken()
    parent_record = only("parent")
    children = records(name="child")
    assert parent_record.status is Status.SUCCESS
    assert len(children) == 2 and all(c.parent == parent_record.id for c in children)
    assert only("broken").status is Status.ERROR
    assert only("broken").data["message"] == "async boom"


async def test_cancelled_coroutine_is_recorded_as_cancelled() -> None:
    started = asyncio.Event()

    @taskreport.track(name="sleeper")
    async def sleeper() -> None:
        started.set()
        await asyncio.sleep(60)

    running = asyncio.create_task(sleeper())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert only("sleeper").status is Status.CANCELLED


async def test_coroutine_task_is_created_when_awaited_not_when_called() -> None:
    @taskreport.track(name="lazy")
    async def lazy() -> int:
        return 1

    pending = lazy()
    assert records(name="lazy") == []
    assert await pending == 1
    assert only("lazy").status is Status.SUCCESS


# -- generators -----------------------------------------------------------------------------------------
@taskreport.track(name="numbers")
def numbers(n: int) -> Generator[int, None, str]:
    yield from range(n)
    return "finished"


def test_generator_is_processing_from_the_first_item_and_success_when_exhausted() -> None:
    it = numbers(3)
    assert records(name="numbers") == []  # calling it runs nothing yet
    assert next(it) == 0
    assert only("numbers").status is Status.PROCESSING
    assert list(it) == [1, 2]
    assert only("numbers").status is Status.SUCCESS


def test_generator_return_value_passes_through() -> None:
    def outer() -> Iterator[int]:
        result = yield from numbers(2)
        assert result == "finished"
        yield 99

    assert list(outer()) == [0, 1, 99]


def test_generator_closed_early_is_cancelled() -> None:
    for i in numbers(10):
        if i == 2:
            break
    assert only("numbers").status is Status.CANCELLED


def test_generator_error_is_recorded_and_reraised() -> None:
    @taskreport.track(name="bad-gen")
    def bad_gen() -> Iterator[int]:
        yield 1
        raise Boom("mid-stream")

    it = bad_gen()
    assert next(it) == 1
    with pytest.raises(Boom, match="mid-stream"):
        next(it)
    assert only("bad-gen").status is Status.ERROR


def test_generator_send_and_throw_reach_the_original() -> None:
    log: list[Any] = []

    @taskreport.track(name="echo")
    def echo() -> Generator[Any, Any, None]:
        received = None
        while True:
            try:
                received = yield received
                log.append(received)
            except Boom:
                log.append("caught")
                received = "recovered"

    it = echo()
    assert next(it) is None
    assert it.send("a") == "a"
    assert it.throw(Boom()) == "recovered"
    it.close()
    assert log == ["a", "caught"]
    assert only("echo").status is Status.CANCELLED


def test_generator_task_is_current_only_inside_its_body() -> None:
    inside: list[Any] = []

    @taskreport.track(name="watch")
    def watch() -> Iterator[int]:
        for i in range(2):
            inside.append(taskreport.current_task())
            yield i

    for _ in watch():
        assert taskreport.current_task() is None  # the consumer's code is not part of the generator's task
    assert inside[0] is not None and inside[0] is inside[1]


def test_generator_pipeline_stages_are_children_of_the_caller() -> None:
    @taskreport.track(name="read")
    def read() -> Iterator[int]:
        yield from range(3)

    @taskreport.track(name="square")
    def square(items: Iterator[int]) -> Iterator[int]:
        for i in items:
            yield i * i

    @taskreport.track(name="job")
    def job() -> int:
        return sum(square(read()))

    assert job() == 5
    job_id = only("job").id
    assert only("read").parent == job_id and only("square").parent == job_id
    assert {only(n).status for n in ("read", "square", "job")} == {Status.SUCCESS}


# -- async generators --------------------------------------------------------------------------------------
async def test_async_generator_success_close_and_error() -> None:
    @taskreport.track(name="ticks")
    async def ticks(n: int) -> AsyncGenerator[int, None]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @taskreport.track(name="bad-ticks")
    async def bad_ticks() -> AsyncIterator[int]:
        yield 1
        raise Boom("async stream")

    assert [i async for i in ticks(3)] == [0, 1, 2]
    stream = ticks(10)
    assert await stream.__anext__() == 0
    await stream.aclose()
    with pytest.raises(Boom):
        async for _ in bad_ticks():
            pass
    assert sorted(r.status.value for r in records(name="ticks")) == ["cancelled", "success"]
    assert only("bad-ticks").status is Status.ERROR


async def test_async_generator_cancelled_mid_iteration() -> None:
    started = asyncio.Event()

    @taskreport.track(name="forever")
    async def forever() -> AsyncIterator[int]:
        while True:
            started.set()
            await asyncio.sleep(60)
            yield 1

    async def consume() -> None:
        async for _ in forever():
            pass

    running = asyncio.create_task(consume())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert only("forever").status is Status.CANCELLED


# -- options and validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "attr"),
    [
        ({"value_max": -1}, "value_max"),
        ({"tags": {"env": "x"}}, "tags.env"),  # tag values need two characters
        ({"colour": "red"}, "colour"),
        ({"status": "success"}, "status"),
        ({"name": ""}, "name"),
        ({"heartbeat": 0}, "heartbeat"),
        ({"data": {"f": float("nan")}}, "data"),
    ],
)
def test_bad_fields_are_rejected_at_decoration(kwargs: dict[str, Any], attr: str) -> None:
    with pytest.raises(ValidationError) as info:
        taskreport.track(**kwargs)
    assert info.value.attr == attr
    assert records() == []


def test_heartbeat_sets_a_stale_timeout_of_twice_the_interval() -> None:
    @taskreport.track(name="beating", heartbeat=30)
    def beating() -> None:
        pass

    @taskreport.track(name="explicit", heartbeat=30, stale_timeout=600)
    def explicit() -> None:
        pass

    beating()
    explicit()
    assert only("beating").stale_timeout == 60
    assert only("explicit").stale_timeout == 600


def test_parent_none_opts_out_of_nesting() -> None:
    @taskreport.track(name="detached", parent=None)
    def detached() -> None:
        pass

    @taskreport.track(name="host")
    def host() -> None:
        detached()

    host()
    assert only("detached").parent is None


def test_a_failing_before_create_hook_leaves_the_function_running_untracked(caplog: pytest.LogCaptureFixture) -> None:
    def hook(fields: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("hook bug")

    taskreport.init(before_create=hook)

    @taskreport.track(name="robust")
    def robust() -> int:
        return 7

    assert robust() == 7
    assert "hook bug" in caplog.text
    assert records(name="robust") == []


# -- configuration ---------------------------------------------------------------------------------------
def test_without_any_configuration_tasks_go_to_the_embedded_store(isolated: Path) -> None:
    assert double(1) == [1, 1]
    assert only(f"{__name__}.double").status is Status.SUCCESS
    assert any(isolated.rglob("*.db"))


async def test_disabled_is_a_passthrough_and_writes_nothing(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.shutdown()

    @taskreport.track(name="off")
    def off() -> str:
        assert taskreport.current_task() is None
        return "ran"

    @taskreport.track(name="off-async")
    async def off_async() -> str:
        return "ran"

    with pytest.raises(Boom):
        taskreport.track(lambda: (_ for _ in ()).throw(Boom()))()
    assert off() == "ran"
    assert await off_async() == "ran"
    assert list(numbers(2)) == [0, 1]
    with taskreport.task("off-block") as t:
        t.update(value=3)
        assert taskreport.current_task() is None
    assert list(taskreport.progress([1, 2], name="off-loop")) == [1, 2]
    with taskreport.scope(tags={"env": "off"}):
        assert list(t.iter(range(3))) == [0, 1, 2]
    assert taskreport.flush()
    assert taskreport.stats()["requests"] == 0
    assert not isolated.exists() or not any(isolated.iterdir())
