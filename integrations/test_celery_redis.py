"""End to end on Redis: a real ``celery worker`` (prefork, 4 children) reporting into the embedded store, one
SQLite file that the publisher (this process), the worker's main process and its children all write.

The tests share one worker (and one Redis database of their own); each names its tasks by Celery id."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _celery_harness import Beat, Setup, Worker, ended, records, redis_database, status_is, wait_for

import taskreport
from taskreport.integrations.celery import ref_for

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("celery-redis")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("celery-redis")
    with redis_database() as db:
        url = f"redis://127.0.0.1:6379/{db}"
        yield Setup(broker=url, backend=url, queue="tr-redis",
                    report={"TASKREPORT_HOME": str(directory / "home")}, heartbeat=30)


@pytest.fixture(scope="module")
def worker(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(setup, tmp_path_factory.mktemp("celery-redis-log") / "worker.log", "-P", "prefork", "-c", "4")
    yield w
    w.stop()


@pytest.fixture
def app(setup: Setup, worker: Worker) -> Any:
    import _celery_app

    setup.init_publisher()
    return _celery_app.make_app(setup.broker, setup.backend, setup.queue)


def test_the_record_is_made_pending_at_publish_and_the_worker_ends_that_record(app: Any) -> None:
    with taskreport.task("web request") as web:
        called = time.monotonic()
        result = app.tasks["tr.add"].apply_async((2, 3), countdown=1.5)
        publishing = time.monotonic() - called  # the countdown runs from the call, time_to_start from sending
    assert taskreport.flush(5)
    (pending,) = records(result.id)
    assert (pending.status.value, pending.name, pending.external_id, pending.queue) == (
        "pending", "tr.add", result.id, "tr-redis")
    assert pending.parent == web.id and pending.ref == ref_for(result.id)
    assert pending.data == {"args": [2, 3], "kwargs": {}}
    assert pending.stale_timeout == 60  # heartbeat 30 s

    done = wait_for(result.id, status_is("success"))
    assert (done.id, done.value, done.parent) == (pending.id, 5, web.id)
    assert done.time_to_start is not None and 1.4 - publishing <= done.time_to_start < 10
    assert done.start_time is not None and done.end_time is not None
    assert result.get(timeout=10) == 5


def test_an_error_carries_the_exception_and_its_last_frames(app: Any) -> None:
    result = app.tasks["tr.fail"].delay("boom")
    record = wait_for(result.id, status_is("error"))
    assert record.data["exception"] == "builtins.ValueError" and record.data["message"] == "boom"
    assert 'raise ValueError(message)' in record.data["traceback"]
    assert "retries" not in record.data and "why" not in record.data


def test_inside_the_task_current_task_is_its_record(app: Any) -> None:
    result = app.tasks["tr.progress"].delay(50)
    record = wait_for(result.id, status_is("success"))
    assert (record.value, record.value_max) == (50, 50)
    (step,) = taskreport.list_tasks(parent=record.id)
    assert (step.name, step.status.value) == ("tr.progress.step", "success")


def test_a_task_from_a_producer_that_does_not_track_is_tracked_from_its_start(app: Any, setup: Setup) -> None:
    taskreport.init(home=setup.report["TASKREPORT_HOME"])  # this process now reports without the integration
    result = app.tasks["tr.add"].delay(4, 4)
    assert result.get(timeout=10) == 8
    record = wait_for(result.id, status_is("success"))
    assert (record.name, record.value, record.parent, record.queue) == ("tr.add", 8, None, "tr-redis")
    assert record.time_to_start == 0  # nobody said when it was sent


def test_retries_keep_one_record_pending_in_between(app: Any) -> None:
    result = app.tasks["tr.flaky"].apply_async((2, 1.0))
    waiting = wait_for(result.id, lambda r: r.status.value == "pending" and r.data.get("retries") == 1,
                       what="pending after the first retry")
    assert waiting.data["exception"] == "builtins.KeyError" and "attempt 0" in waiting.data["message"]
    record = wait_for(result.id, status_is("success"))
    assert record.id == waiting.id and record.value == 2 and record.data["retries"] == 2
    assert record.time_to_start is not None and record.time_to_start < 1.0  # the first attempt's


def test_exhausted_retries_end_in_error(app: Any) -> None:
    result = app.tasks["tr.flaky"].delay(10, 0)
    record = wait_for(result.id, status_is("error"))
    assert record.data["retries"] == 3 and record.data["why"] == "retries exhausted (3 of 3)"
    assert record.data["exception"] == "builtins.KeyError"


def test_revoked_before_start_and_expired_tasks_end_cancelled(app: Any) -> None:
    # the revoke is a broadcast that the worker must hear before the countdown ends: on a loaded machine (CI's
    # first minute, with the long runs starting beside it) one second was seen not to be enough
    revoked = app.tasks["tr.add"].apply_async((1, 1), countdown=3.0)
    expired = app.tasks["tr.add"].apply_async((1, 2), countdown=1.0, expires=0.5)
    app.control.revoke(revoked.id)
    one = wait_for(revoked.id, status_is("cancelled"))
    two = wait_for(expired.id, status_is("cancelled"))
    assert one.data["why"] == "revoked before it started" and one.value is None
    assert two.data["why"] == "expired before it started"


def test_a_task_revoked_with_terminate_ends_cancelled(app: Any) -> None:
    result = app.tasks["tr.sleep"].delay(30)
    running = wait_for(result.id, lambda r: r.status.value == "processing" and "pid" in (r.data or {}))
    app.control.revoke(result.id, terminate=True)
    record = wait_for(result.id, ended())
    assert record.status.value == "cancelled", record
    assert record.data["why"] == "revoked and terminated while running (SIGTERM)"
    assert record.id == running.id


def test_time_limits_end_in_error_with_why(app: Any) -> None:
    soft = app.tasks["tr.soft"].delay(3)
    caught = app.tasks["tr.soft_caught"].delay(3)
    hard = app.tasks["tr.hard"].delay(5)
    record = wait_for(soft.id, status_is("error"))
    assert record.data["why"] == "soft time limit exceeded (0.5 s)"
    assert record.data["exception"] == "billiard.exceptions.SoftTimeLimitExceeded"
    assert wait_for(caught.id, ended()).status.value == "success"
    record = wait_for(hard.id, status_is("error"))
    assert record.data["why"] == "hard time limit exceeded (1 s)"
    assert record.data["args"] == [5]


def test_a_pool_child_killed_with_kill_9_ends_its_task_as_celery_does(app: Any, worker: Worker) -> None:
    result = app.tasks["tr.sleep"].delay(30)
    running = wait_for(result.id, lambda r: r.status.value == "processing" and "pid" in (r.data or {}))
    os.kill(running.data["pid"], signal.SIGKILL)
    record = wait_for(result.id, ended())
    assert record.status.value == "error", record
    assert record.data["exception"] == "billiard.exceptions.WorkerLostError"
    assert record.data["why"].startswith("the worker process running it was lost")


def test_canvas_members_are_children_of_the_task_that_published_them(app: Any) -> None:
    kinds = {kind: app.tasks["tr.canvas"].delay(kind, 3) for kind in ("group", "chain", "chord")}
    for kind, result in kinds.items():
        record = wait_for(result.id, status_is("success"))
        expected = {"group": ["tr.add"] * 3, "chain": ["tr.add"] * 3, "chord": ["tr.add"] * 3 + ["tr.total"]}[kind]
        deadline = time.monotonic() + 20
        children: list[taskreport.TaskRecord] = []
        while time.monotonic() < deadline:
            children = list(taskreport.list_tasks(parent=record.id))
            if len(children) == len(expected) and all(c.status.value == "success" for c in children):
                break
            time.sleep(0.05)
        assert sorted(c.name for c in children) == expected, (kind, children)
        if kind == "chord":
            (callback,) = [c for c in children if c.name == "tr.total"]
            assert callback.value == 0 + 2 + 4
        if kind == "chain":
            assert sorted(c.value for c in children) == [2, 3, 4]


def test_a_chain_published_outside_any_task_has_members_without_parents(app: Any) -> None:
    with taskreport.task("web request") as web:
        signature = app.tasks["tr.add"].s(1, 1) | app.tasks["tr.add"].s(10)
        result = signature.apply_async()
    assert result.get(timeout=10) == 12
    # the members' records made at publish, with their parent, leave this process with its next flush: the
    # worker's ends may reach the server first (and make the records, by reference, without a parent yet)
    assert taskreport.flush(5)
    first = wait_for(result.parent.id, status_is("success"))
    second = wait_for(result.id, status_is("success"))
    assert first.parent == web.id and second.parent == web.id  # the chain's, not its first member's


def test_tasks_sent_by_beat_carry_the_schedule_entry(setup: Setup, worker: Worker, tmp_path: Path) -> None:
    setup.init_publisher()
    beat = Beat(setup, tmp_path)
    try:
        deadline = time.monotonic() + 30
        found: list[taskreport.TaskRecord] = []
        while not found and time.monotonic() < deadline:
            found = [t for t in taskreport.list_tasks(name="tr.add")
                     if (t.data or {}).get("beat_entry") == "every-second" and t.status.value == "success"]
            time.sleep(0.1)
    finally:
        beat.stop()
    assert found, beat.log.read_text()
    assert found[0].value == 42 and found[0].data["args"] == [20, 22]


def test_which_tasks_are_tracked(app: Any) -> None:
    untracked = app.tasks["tr.untracked"].delay()
    optin = app.tasks["tr.optin"].delay()
    based = app.tasks["tr.base"].delay()
    assert untracked.get(timeout=10) == "untracked"
    record = wait_for(optin.id, status_is("success"))
    assert record.tags == {"team": "billing"} and record.value_max == 7
    wait_for(based.id, status_is("success"))
    assert records(untracked.id) == []
