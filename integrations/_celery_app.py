"""The Celery app of the end-to-end suite: imported by the real ``celery worker`` and ``celery beat``
processes (``-A _celery_app``, configured from the environment) and by the tests that publish
(:func:`make_app`, configured with arguments). Both report through ``taskreport.init`` with the Celery
integration, as an application's shared module would.

Environment (worker and beat): ``TR_CELERY_BROKER``, ``TR_CELERY_BACKEND``, ``TR_CELERY_QUEUE``,
``TR_CELERY_FLUSH`` (flush interval), ``TR_CELERY_HEARTBEAT``, ``TR_CELERY_BEAT`` (a schedule entry
``every-second`` sending ``tr.add``), ``TR_CELERY_FAULT`` (the integration's ``Task.create`` raises for
``tr.faulty``: a bug inside the integration that must not break the task); ``TASKREPORT_*`` say where
tasks are reported.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from celery import Celery, chord, group
from celery.exceptions import SoftTimeLimitExceeded

import taskreport
from taskreport.integrations.celery import CeleryIntegration, TrackedTask

UNTRACKED = "tr.untracked"
#: never tracked either: ``tr.add`` without reporting, for benchmarks
PLAIN = "tr.add_plain"


def integration(heartbeat: float | None = None) -> CeleryIntegration:
    record_args = os.environ.get("TR_CELERY_RECORD_ARGS", "1") == "1"
    return CeleryIntegration(auto_track=True, excludes=[UNTRACKED, PLAIN], record_args=record_args,
                             heartbeat=heartbeat)


_apps: dict[tuple[str, str, str, bool], Celery] = {}


def make_app(broker: str, backend: str, queue: str, *, beat: bool = False) -> Celery:
    """The app for one broker and queue (made once per process: tasks register once)."""
    key = (broker, backend, queue, beat)
    if key not in _apps:
        _apps[key] = _make_app(broker, backend, queue, beat=beat)
    return _apps[key]


def _make_app(broker: str, backend: str, queue: str, *, beat: bool = False) -> Celery:
    app = Celery(f"tr-{queue}", broker=broker, backend=backend, set_as_current=True)
    app.conf.update(
        task_default_queue=queue,
        task_create_missing_queues=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        result_expires=600,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": 600},
    )
    # not shared: several apps live in one test process, and shared tasks would register in each of them
    task = functools.partial(app.task, shared=False)
    if beat:
        app.conf.beat_schedule = {"every-second": {"task": "tr.add", "schedule": 1.0, "args": (20, 22)}}

    @task(name="tr.add")
    def add(x: int, y: int) -> int:
        taskreport.current_task().update(value=x + y)  # type: ignore[union-attr]
        return x + y

    @task(name=PLAIN)
    def add_plain(x: int, y: int) -> int:
        return x + y

    @task(name="tr.progress")
    def progress(n: int) -> int:
        task = taskreport.current_task()
        assert task is not None
        for _ in task.iter(range(n)):
            pass
        with taskreport.task("tr.progress.step"):
            pass
        return n

    @task(name="tr.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @task(name="tr.flaky", bind=True, max_retries=3)
    def flaky(self: Any, failures: int, countdown: float = 0.0) -> str:
        if self.request.retries < failures:
            try:
                raise KeyError(f"attempt {self.request.retries}")
            except KeyError as exc:
                raise self.retry(exc=exc, countdown=countdown) from exc
        taskreport.current_task().update(value=self.request.retries)  # type: ignore[union-attr]
        return "ok"

    @task(name="tr.sleep")
    def sleep(seconds: float) -> str:
        taskreport.current_task().update(data={"pid": os.getpid()})  # type: ignore[union-attr]
        time.sleep(seconds)
        return "slept"

    @task(name="tr.soft", soft_time_limit=0.5, time_limit=5)
    def soft(seconds: float) -> None:
        time.sleep(seconds)

    @task(name="tr.soft_caught", soft_time_limit=0.5, time_limit=5)
    def soft_caught(seconds: float) -> str:
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "in time"

    @task(name="tr.hard", time_limit=1)
    def hard(seconds: float) -> None:
        taskreport.current_task().update(data={"pid": os.getpid()})  # type: ignore[union-attr]
        time.sleep(seconds)

    @task(name="tr.total")
    def total(values: list[int]) -> int:
        taskreport.current_task().update(value=sum(values))  # type: ignore[union-attr]
        return sum(values)

    @task(name="tr.canvas")
    def canvas(kind: str, n: int) -> str:
        """Publishes a group, chain or chord of ``tr.add`` from inside a tracked task."""
        if kind == "group":
            result = group(add.s(i, i) for i in range(n)).apply_async()
        elif kind == "chain":
            result = (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
        else:
            result = chord((add.s(i, i) for i in range(n)), total.s()).apply_async()
        return str(result.id)

    @task(name=UNTRACKED)
    def untracked() -> str:
        return "untracked"

    @task(name="tr.optin", taskreport={"tags": {"team": "billing"}, "value_max": 7})
    def optin() -> None:
        pass

    @task(name="tr.base", base=TrackedTask)
    def based() -> None:
        pass

    @task(name="tr.faulty")
    def faulty() -> str:
        return "still done"

    @task(name="tr.noop")
    def noop() -> None:
        pass

    return app


def _configure_from_environment() -> Celery | None:
    broker = os.environ.get("TR_CELERY_BROKER")
    if not broker:
        return None
    heartbeat = os.environ.get("TR_CELERY_HEARTBEAT")
    taskreport.init(
        integrations=[integration(float(heartbeat) if heartbeat else None)],
        flush_interval=float(os.environ.get("TR_CELERY_FLUSH", "0.1")),
    )
    if os.environ.get("TR_CELERY_FAULT"):
        _inject_fault()
    return make_app(broker, os.environ["TR_CELERY_BACKEND"], os.environ["TR_CELERY_QUEUE"],
                    beat=bool(os.environ.get("TR_CELERY_BEAT")))


def _inject_fault() -> None:
    """A bug inside the integration, for one task: creating its record raises."""
    from taskreport.integrations.celery import _worker as integration_module

    real = integration_module.Task.create

    def create(name: str, **fields: Any) -> taskreport.Task:
        if name == "tr.faulty":
            raise RuntimeError("injected fault inside the integration")
        return real(name, **fields)

    integration_module.Task = type("Task", (taskreport.Task,), {"create": staticmethod(create)})  # type: ignore[misc]


app = _configure_from_environment()
