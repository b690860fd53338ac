"""End to end on RabbitMQ: a real ``celery worker`` (prefork, 4 children) consuming a queue of its own on
RabbitMQ (results in a Redis database of its own), reporting into the embedded store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _celery_harness import Setup, Worker, ended, rabbitmq_queue, records, redis_database, status_is, wait_for

import taskreport

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.xdist_group("celery-rabbitmq")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("celery-rabbitmq")
    with rabbitmq_queue("tr-amqp") as queue, redis_database() as db:
        yield Setup(broker="amqp://guest:guest@127.0.0.1:5672//", backend=f"redis://127.0.0.1:6379/{db}",
                    queue=queue, report={"TASKREPORT_HOME": str(directory / "home")})


@pytest.fixture(scope="module")
def worker(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(setup, tmp_path_factory.mktemp("celery-rabbitmq-log") / "worker.log", "-P", "prefork", "-c", "4")
    yield w
    w.stop()


@pytest.fixture
def app(setup: Setup, worker: Worker) -> Any:
    import _celery_app

    setup.init_publisher()
    return _celery_app.make_app(setup.broker, setup.backend, setup.queue)


def test_publish_to_success_and_error_on_one_record_each(app: Any, setup: Setup) -> None:
    with taskreport.task("web request") as web:
        called = time.monotonic()
        ok = app.tasks["tr.add"].apply_async((20, 22), countdown=1.0)
        publishing = time.monotonic() - called  # the first publication connects: it eats into the countdown
        failed = app.tasks["tr.fail"].delay("amqp")
    assert taskreport.flush(5)
    pending = wait_for(ok.id, lambda r: True)
    assert (pending.status.value, pending.queue, pending.parent) == ("pending", setup.queue, web.id)
    record = wait_for(ok.id, status_is("success"))
    assert (record.id, record.value, record.parent) == (pending.id, 42, web.id)
    assert record.time_to_start is not None and 0.9 - publishing <= record.time_to_start < 10
    record = wait_for(failed.id, status_is("error"))
    assert record.data["message"] == "amqp" and record.parent == web.id


def test_retries_keep_one_record(app: Any) -> None:
    again = app.tasks["tr.flaky"].delay(2, 0.2)
    exhausted = app.tasks["tr.flaky"].delay(10, 0)
    record = wait_for(again.id, status_is("success"))
    assert record.value == 2 and record.data["retries"] == 2
    record = wait_for(exhausted.id, status_is("error"))
    assert record.data["why"] == "retries exhausted (3 of 3)"


def test_revoked_before_start_and_terminated_tasks_end_cancelled(app: Any) -> None:
    # the revoke must reach the worker before the countdown ends: one second is not always enough on a loaded
    # machine (see the same test on Redis)
    early = app.tasks["tr.add"].apply_async((1, 1), countdown=3.0)
    app.control.revoke(early.id)
    running = app.tasks["tr.sleep"].delay(30)
    wait_for(running.id, lambda r: r.status.value == "processing" and "pid" in (r.data or {}))
    app.control.revoke(running.id, terminate=True)
    assert wait_for(early.id, ended()).data["why"] == "revoked before it started"
    record = wait_for(running.id, ended())
    assert record.status.value == "cancelled" and "terminated" in record.data["why"]


def test_a_chord_and_its_callback_are_children_of_the_publishing_task(app: Any) -> None:
    result = app.tasks["tr.canvas"].delay("chord", 4)
    parent = wait_for(result.id, status_is("success"))
    deadline = time.monotonic() + 20
    children: list[taskreport.TaskRecord] = []
    while time.monotonic() < deadline:
        children = list(taskreport.list_tasks(parent=parent.id))
        if len(children) == 5 and all(c.status.value == "success" for c in children):
            break
        time.sleep(0.05)
    assert sorted(c.name for c in children) == ["tr.add"] * 4 + ["tr.total"]
    assert [c.value for c in children if c.name == "tr.total"] == [0 + 2 + 4 + 6]
    assert all(len(records(c.external_id or "")) == 1 for c in children)
