"""End to end on the other pools, on Redis, reporting into the embedded store: ``solo`` and ``threads`` report
the same way as prefork; ``max_tasks_per_child=1`` (a pool child exits after each task) loses nothing; and an
exception inside the integration never breaks the user's task and is logged once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _celery_harness import Setup, Worker, records, redis_database, status_is, wait_for

import taskreport

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("celery-pools")]


@pytest.fixture(scope="module")
def database() -> Iterator[int]:
    with redis_database() as db:
        yield db


def _setup(database: int, tmp_path: Path, queue: str) -> Setup:
    url = f"redis://127.0.0.1:6379/{database}"
    return Setup(broker=url, backend=url, queue=queue, report={"TASKREPORT_HOME": str(tmp_path / "home")})


def _mixed_batch(app: Any) -> None:
    """Successes, a failure, a retry, a task's children, progress: each one record with the right end."""
    adds = [app.tasks["tr.add"].delay(i, 1) for i in range(6)]
    failed = app.tasks["tr.fail"].delay("no")
    flaky = app.tasks["tr.flaky"].delay(1, 0)
    canvas = app.tasks["tr.canvas"].delay("group", 2)
    progress = app.tasks["tr.progress"].delay(10)
    for i, result in enumerate(adds):
        assert wait_for(result.id, status_is("success")).value == i + 1
    assert wait_for(failed.id, status_is("error")).data["message"] == "no"
    record = wait_for(flaky.id, status_is("success"))
    assert record.value == 1 and record.data["retries"] == 1
    parent = wait_for(canvas.id, status_is("success"))
    assert wait_for(progress.id, status_is("success")).value == 10
    children = list(taskreport.list_tasks(parent=parent.id))
    assert sorted(c.name for c in children) == ["tr.add", "tr.add"]


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "threads", "-c", "4"]], ids=["solo", "threads"])
def test_solo_and_threads_pools_report_like_prefork(database: int, tmp_path: Path, pool: list[str]) -> None:
    import _celery_app

    setup = _setup(database, tmp_path, f"tr-{pool[1]}")
    worker = Worker(setup, tmp_path / "worker.log", *pool)
    try:
        setup.init_publisher()
        _mixed_batch(_celery_app.make_app(setup.broker, setup.backend, setup.queue))
    finally:
        worker.stop()


def test_max_tasks_per_child_1_loses_nothing(database: int, tmp_path: Path) -> None:
    import _celery_app

    setup = _setup(database, tmp_path, "tr-one-each")
    setup.flush = 5.0  # nothing is sent on the way: each child delivers at its exit
    worker = Worker(setup, tmp_path / "worker.log", "-P", "prefork", "-c", "2", "--max-tasks-per-child", "1")
    try:
        setup.init_publisher(flush_interval=0.1)
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        results = [app.tasks["tr.add"].delay(i, i) for i in range(6)]
        for i, result in enumerate(results):
            record = wait_for(result.id, status_is("success"))
            assert record.value == 2 * i and record.time_to_start is not None
    finally:
        worker.stop()


@pytest.mark.internal_errors
def test_an_exception_inside_the_integration_never_breaks_the_task_and_is_logged_once(
    database: int, tmp_path: Path
) -> None:
    import _celery_app

    setup = _setup(database, tmp_path, "tr-faulty")
    worker = Worker(setup, tmp_path / "worker.log", "-P", "solo", TR_CELERY_FAULT="1")
    try:
        setup.init_publisher()
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        taskreport.init(home=setup.report["TASKREPORT_HOME"])  # publish without records: the worker makes them
        faulty = [app.tasks["tr.faulty"].delay() for _ in range(3)]
        fine = app.tasks["tr.add"].delay(1, 2)
        assert [r.get(timeout=10) for r in faulty] == ["still done"] * 3
        assert wait_for(fine.id, status_is("success")).value == 3
        assert all(records(r.id) == [] for r in faulty)
    finally:
        worker.stop()
    log = worker.output()
    assert log.count("the Celery integration failed in task_prerun") == 1, log
    assert log.count("RuntimeError: injected fault inside the integration") == 1
    assert "Signal handler" not in log  # nothing reached Celery
