"""Progress over iterables: ``task.iter()``, ``progress()``, ``increment``/``set_total``; exact counts however
the loop ends, intermediate values while it runs, statuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from recorded import only, records

import taskreport
from taskreport import Status, _counting


def unsized(n: int) -> Iterator[int]:
    yield from range(n)


class Boom(Exception):
    pass


# -- task.iter() --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7, 100_003])
def test_iter_yields_every_item_and_records_the_exact_count(n: int) -> None:
    with taskreport.task("count") as t:
        assert list(t.iter(range(n))) == list(range(n))
    record = only("count")
    assert (record.value, record.value_max) == (n, n)


def test_iter_of_an_unsized_iterable_learns_the_total_at_the_end() -> None:
    with taskreport.task("unsized") as t:
        assert sum(t.iter(unsized(500))) == sum(range(500))
        assert t.value_max == 500


def test_iter_total_argument_wins_over_len() -> None:
    with taskreport.task("explicit-total") as t:
        for _ in t.iter(unsized(5), total=20):
            pass
    record = only("explicit-total")
    assert (record.value, record.value_max, record.value_percent) == (5, 20, 25)


def test_iter_adds_to_the_value_already_there() -> None:
    with taskreport.task("stages") as t:
        for _ in t.iter(range(3)):
            pass
        for _ in t.iter(range(4)):
            pass
    record = only("stages")
    assert (record.value, record.value_max) == (7, 7)


def test_iter_counts_exactly_on_break_and_leaves_the_status_to_the_owner() -> None:
    with taskreport.task("partial") as t:
        for i in t.iter(range(1_000_000)):
            if i == 12_344:
                break
    record = only("partial")
    assert record.status is Status.SUCCESS
    assert (record.value, record.value_max) == (12_345, 1_000_000)


def test_iter_counts_exactly_when_the_source_raises() -> None:
    def flaky() -> Iterator[int]:
        yield from range(10)
        raise Boom("source broke")

    with pytest.raises(Boom), taskreport.task("flaky") as t:
        for _ in t.iter(flaky()):
            pass
    record = only("flaky")
    assert record.status is Status.ERROR and record.value == 10


def test_iter_publishes_while_the_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_counting, "MININTERVAL", 0.01)
    seen: list[int | None] = []
    with taskreport.task("live") as t:
        for i in t.iter(range(40)):
            if i % 10 == 9:
                time.sleep(0.02)
                seen.append(t.value)
    values = [v or 0 for v in seen]
    assert 0 < values[-1] < 40  # published before the end, not per item
    assert values == sorted(values)
    assert only("live").value == 40


def test_chunks_grow_so_that_fast_loops_publish_rarely() -> None:
    before = taskreport.stats()["merged"]
    with taskreport.task("fast") as t:
        for _ in t.iter(range(2_000_000)):
            pass
    merges = taskreport.stats()["merged"] - before
    assert merges < 200  # publishes, not 2,000,000 per-item updates
    assert only("fast").value == 2_000_000


def test_increment_and_set_total_by_hand() -> None:
    with taskreport.task("manual") as t:
        t.set_total(8)
        t.increment()
        t.increment(3)
    record = only("manual")
    assert (record.value, record.value_max, record.value_percent) == (4, 8, 50)


# -- progress() --------------------------------------------------------------------------------------------
def test_progress_reports_a_loop_like_tqdm() -> None:
    items = ["a", "b", "c"]
    seen = list(taskreport.progress(items, name="letters", tags={"kind": "demo"}))
    assert seen == items
    record = only("letters")
    assert record.status is Status.SUCCESS
    assert (record.value, record.value_max) == (3, 3)
    assert record.tags == {"kind": "demo"}
    assert record.start_time is not None and record.end_time is not None


def test_progress_is_processing_from_the_first_item() -> None:
    loop = iter(taskreport.progress(range(5), name="midway"))
    assert next(loop) == 0
    record = only("midway")
    assert record.status is Status.PROCESSING and record.value_max == 5
    assert list(loop) == [1, 2, 3, 4]
    assert only("midway").status is Status.SUCCESS


def test_progress_stopped_early_is_cancelled_with_the_exact_count() -> None:
    for i in taskreport.progress(range(100), name="early"):
        if i == 41:
            break
    record = only("early")
    assert record.status is Status.CANCELLED
    assert record.value == 42


def test_progress_name_defaults_to_the_calling_function() -> None:
    for _ in taskreport.progress([1]):
        pass
    assert only(f"{__name__}.test_progress_name_defaults_to_the_calling_function").status is Status.SUCCESS


def test_progress_is_the_current_task_for_the_loop_body() -> None:
    @taskreport.track(name="item-step")
    def step() -> None:
        pass

    for _ in taskreport.progress(range(3), name="outer-loop"):
        step()
    assert taskreport.current_task() is None
    loop_id = only("outer-loop").id
    steps = records(name="item-step")
    assert len(steps) == 3 and {s.parent for s in steps} == {loop_id}

    for i in taskreport.progress(range(3), name="broken-loop"):
        if i == 1:
            break
    assert taskreport.current_task() is None


def test_progress_inside_a_tracked_job_is_its_child() -> None:
    @taskreport.track(name="job")
    def job() -> int:
        return sum(taskreport.progress(range(10), name="job-loop"))

    assert job() == 45
    assert only("job-loop").parent == only("job").id


def test_progress_as_context_manager_records_errors_in_the_loop_body() -> None:
    with pytest.raises(Boom), taskreport.progress(range(10), name="body-fails") as loop:
        for i in loop:
            if i == 3:
                raise Boom("item 3")
    record = only("body-fails")
    assert record.status is Status.ERROR
    assert record.data["message"] == "item 3"
    assert record.value == 4


def test_progress_as_context_manager_succeeds_at_the_end_of_the_block() -> None:
    with taskreport.progress(unsized(6), name="block-loop") as loop:
        for _ in loop:
            pass
        assert only("block-loop").status is Status.PROCESSING  # the block is not over yet
        loop.update(data={"note": "after the loop"})
    record = only("block-loop")
    assert record.status is Status.SUCCESS
    assert (record.value, record.value_max, record.data) == (6, 6, {"note": "after the loop"})


def test_progress_by_hand_without_an_iterable() -> None:
    manual: taskreport.progress[Any] = taskreport.progress(name="by-hand", total=10)
    with manual as p:
        p.increment(4)
        p.set_total(8)
        assert isinstance(p.task, taskreport.Task)
    record = only("by-hand")
    assert (record.status, record.value, record.value_max) == (Status.SUCCESS, 4, 8)
    with pytest.raises(TypeError):
        iter(taskreport.progress(name="nothing"))


def test_progress_over_a_zip_that_stops_at_the_total_is_a_success() -> None:
    # zip() stops at its shorter first argument and never asks progress() for the end of its items
    pairs = list(zip("abc", taskreport.progress(range(3), name="zipped"), strict=False))
    assert pairs == [("a", 0), ("b", 1), ("c", 2)]
    del pairs
    record = only("zipped")
    assert (record.status, record.value) == (Status.SUCCESS, 3)


def test_progress_when_disabled_iterates_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.shutdown()
    loop = taskreport.progress(range(4), name="off")
    assert list(loop) == [0, 1, 2, 3]
    with loop as again:
        again.increment()
    assert taskreport.stats()["requests"] == 0


def test_an_abandoned_loop_finalised_late_does_not_restore_a_finished_task() -> None:
    with taskreport.task("outer-block") as outer:
        inner = iter(taskreport.progress(range(10), name="abandoned"))
        next(inner)
        current = taskreport.current_task()
        assert current is not None and current.name == "abandoned"
    assert taskreport.current_task() is None
    del inner  # finalised only now, after the block ended
    assert taskreport.current_task() is None
    assert outer.status is Status.SUCCESS
    assert only("abandoned").status is Status.CANCELLED
