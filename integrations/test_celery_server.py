"""End to end over HTTP: real ``celery worker`` processes reporting to a real taskreport server on PostgreSQL;
a worker killed whole (kill -9) leaves its task to the server's sweeper; and the same worker against a stock
server of the API (no references, no batch operation), where nothing may be made twice or lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _celery_harness import (
    Setup,
    Worker,
    celery_postgres_schema,
    ended,
    records,
    redis_database,
    server_has_refs,
    status_is,
    wait_for,
)
from faultproxy import FaultProxy
from server_fixtures import LiveServer, start_server

import taskreport

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.xdist_group("celery-server")]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with celery_postgres_schema() as url:
        live, stop = start_server(url, sweep_interval=0.2)
        yield live
        stop()


@pytest.fixture(scope="module")
def database() -> Iterator[int]:
    with redis_database() as db:
        yield db


def _setup(server_url: str, live: LiveServer, database: int, queue: str, heartbeat: float | None = None) -> Setup:
    redis = f"redis://127.0.0.1:6379/{database}"
    report = {"TASKREPORT_URL": server_url, "TASKREPORT_TOKEN": live.token, "TASKREPORT_ORG": live.organization,
              "TASKREPORT_PROJECT": live.project, "TASKREPORT_ALLOW_INSECURE_HTTP": "1"}
    return Setup(broker=redis, backend=redis, queue=queue, report=report, heartbeat=heartbeat)


def test_a_worker_reports_to_the_server(server: LiveServer, database: int, tmp_path: Path) -> None:
    import _celery_app

    setup = _setup(server.url, server, database, "tr-http")
    worker = Worker(setup, tmp_path / "worker.log", "-P", "prefork", "-c", "4")
    try:
        setup.init_publisher()
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        if server_has_refs(server.url):
            assert taskreport.list_tasks(page_size=1).page() is not None  # the probe's request, done here
        with taskreport.task("web request") as web:
            called = time.monotonic()
            # long enough that it is still pending when looked at below, on a loaded machine too
            ok = app.tasks["tr.add"].apply_async((2, 2), countdown=3.0)
            publishing = time.monotonic() - called
        retried = app.tasks["tr.flaky"].delay(1, 0)
        failed = app.tasks["tr.fail"].delay("http")
        early = app.tasks["tr.add"].apply_async((0, 0), countdown=1.0)
        chord = app.tasks["tr.canvas"].delay("chord", 3)
        app.control.revoke(early.id)
        assert taskreport.flush(5)
        assert web.wait_id(5) is not None
        if server_has_refs(server.url):
            (pending,) = records(ok.id)  # made at publish
            assert (pending.status.value, pending.parent) == ("pending", web.id)
        record = wait_for(ok.id, status_is("success"))
        assert (record.value, record.parent) == (4, web.id) and record.time_to_start >= 2.9 - publishing
        assert wait_for(retried.id, status_is("success")).data["retries"] == 1
        assert wait_for(failed.id, status_is("error")).data["message"] == "http"
        assert wait_for(early.id, ended()).status.value == "cancelled"
        parent = wait_for(chord.id, status_is("success"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            children = list(taskreport.list_tasks(parent=parent.id))
            if len(children) == 4 and all(c.status.value == "success" for c in children):
                break
            time.sleep(0.1)
        assert sorted(c.name for c in children) == ["tr.add"] * 3 + ["tr.total"]
    finally:
        worker.stop()


def test_a_worker_killed_whole_leaves_its_task_to_the_sweeper(server: LiveServer, database: int,
                                                              tmp_path: Path) -> None:
    import _celery_app

    setup = _setup(server.url, server, database, "tr-killed", heartbeat=0.5)
    worker = Worker(setup, tmp_path / "worker.log", "-P", "prefork", "-c", "2")
    try:
        setup.init_publisher()
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        result = app.tasks["tr.sleep"].delay(60)
        running = wait_for(result.id, lambda r: r.status.value == "processing" and "pid" in (r.data or {}))
        assert running.stale_timeout == 1
        time.sleep(1.5)
        assert records(result.id)[0].status.value == "processing"  # the heartbeat keeps it fresh
        worker.kill()
        record = wait_for(result.id, status_is("stale"), timeout=15)
        assert record.id == running.id
    finally:
        worker.stop()


def test_against_a_stock_server_nothing_is_made_twice_or_lost(server: LiveServer, database: int,
                                                               tmp_path: Path) -> None:
    import _celery_app

    proxy = FaultProxy(server.url)
    proxy.stock = True
    setup = _setup(proxy.url, server, database, "tr-stock", heartbeat=0.5)
    worker = Worker(setup, tmp_path / "worker.log", "-P", "prefork", "-c", "4")
    try:
        setup.init_publisher()
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        with taskreport.task("web request") as web:
            web.wait_id(5)  # its create tells this process that the service has no references
            called = time.monotonic()
            later = app.tasks["tr.add"].apply_async((3, 4), countdown=1.0)
            publishing = time.monotonic() - called
            failed = app.tasks["tr.fail"].delay("stock")
            retried = app.tasks["tr.flaky"].delay(2, 0)
            early = app.tasks["tr.add"].apply_async((0, 0), countdown=1.0)
            running = app.tasks["tr.sleep"].delay(60)
        group = app.tasks["tr.canvas"].delay("group", 3)  # outside: its members nest under it
        assert taskreport.get_client().transport.refs is False
        app.control.revoke(early.id)
        assert taskreport.flush(5)
        assert records(later.id) == []  # nothing at publish: the worker makes the record when it starts
        record = wait_for(later.id, status_is("success"))
        assert (record.value, record.parent) == (7, web.id) and 0.9 - publishing <= record.time_to_start < 10
        assert wait_for(failed.id, status_is("error")).data["message"] == "stock"
        record = wait_for(retried.id, status_is("success"))
        assert record.data["retries"] == 2 and record.value == 2
        assert wait_for(early.id, ended()).data["why"] == "revoked before it started"
        parent = wait_for(group.id, status_is("success"))
        deadline = time.monotonic() + 20
        while len(list(taskreport.list_tasks(parent=parent.id))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(taskreport.list_tasks(parent=parent.id))) == 3
        # terminated while running: the worker's main process can't name the record its child made on a
        # stock server, so the heartbeat stops and the sweeper marks it stale
        wait_for(running.id, lambda r: r.status.value == "processing" and "pid" in (r.data or {}))
        app.control.revoke(running.id, terminate=True)
        assert wait_for(running.id, status_is("stale"), timeout=15).data["pid"] > 0
        posted = [s for s in proxy.requests("POST") if s.path.rstrip("/").endswith("/tasks")]
        names = [s.body["name"] for s in posted if isinstance(s.body, dict)]
        assert names.count("tr.canvas") == 1 and names.count("tr.flaky") == 1  # one create per Celery task
    finally:
        worker.stop()
        proxy.close()
