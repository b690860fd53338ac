"""What must not stop reporting: odd input on the hot path, a task the service always refuses, odd answers,
heartbeats changing while the thread runs, a full pending map, and forks of a task with a heartbeat."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pytest
import requests
from faultproxy import FaultProxy, init_through
from server_fixtures import LiveServer

import taskreport
from taskreport import Status


def names_on(live: LiveServer) -> dict[str, dict[str, Any]]:
    body = requests.get(live.tasks_url, headers=live.headers(), params={"page_size": 200}, timeout=10).json()
    return {t["name"]: t for t in body["results"]}


def test_hot_path_never_raises_on_odd_values(caplog: pytest.LogCaptureFixture) -> None:
    t = taskreport.Task.create("odd")
    with caplog.at_level(logging.ERROR, logger="taskreport"):
        for odd in ({"status": {"not": "hashable"}}, {"actions": 5}, {"end_time": time.time() * 1000}):
            t.update(**odd)  # milliseconds where seconds belong, among others: none of it raises
            assert taskreport.flush(5)
        t.increment("x")  # type: ignore[arg-type]
        assert taskreport.flush(5)
        t.update(value=3)
        t.success()
        assert taskreport.flush(5)
    record = taskreport.get_task(t.id or "")
    assert (record.status, record.value) == (Status.SUCCESS, 3)
    assert record.end_time is not None and record.end_time.year < 3000
    for field in ("status", "actions", "end_time", "value"):
        assert f"{field}: " in caplog.text


def test_a_task_the_service_always_fails_does_not_hold_up_the_others(sqlite_server: LiveServer,
                                                                     proxy: FaultProxy) -> None:
    proxy.fail_when(lambda method, path, body: isinstance(body, dict) and body.get("name") == "bad", 500)
    init_through(proxy, sqlite_server, flush_interval=0.05)
    bad = taskreport.Task.create("bad")
    good = [taskreport.Task.create(f"good{i}") for i in range(3)]
    for t in good:
        t.success()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(t._id for t in good):
        taskreport.flush(0.5)
    assert all(t._id for t in good)
    assert set(names_on(sqlite_server)) == {"good0", "good1", "good2"}
    assert bad._id is None and taskreport.stats()["pending"] == 1  # still kept, still retried


def test_a_redirect_answer_is_reported_and_the_flusher_goes_on(sqlite_server: LiveServer, proxy: FaultProxy,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    init_through(proxy, sqlite_server)
    proxy.fail(302, headers={"Location": "https://elsewhere.example/"})
    with caplog.at_level(logging.ERROR, logger="taskreport"):
        taskreport.Task.create("redirected").success()
        taskreport.flush(5)
    assert "redirect" in caplog.text
    later = taskreport.Task.create("after")
    later.success()
    assert taskreport.flush(5) and later.id is not None
    assert "after" in names_on(sqlite_server)


def test_changes_that_find_the_pending_map_full_are_kept_not_lost() -> None:
    taskreport.init(flush_interval=30, max_pending=1)
    first = taskreport.Task.create("first")  # takes the only place
    second = taskreport.Task.create("second")
    for _ in range(10):
        second.increment()
    second.update(data={"kept": True})
    assert taskreport.stats()["dropped"] > 0
    assert taskreport.flush(5)
    for _ in range(7):
        second.increment()
    second.success()
    first.success()
    assert taskreport.flush(5)
    record = next(iter(taskreport.list_tasks(name="second")))
    assert (record.value, record.data, record.status) == (17, {"kept": True}, Status.SUCCESS)


def test_heartbeats_changing_under_the_thread_never_stop_it() -> None:
    client = taskreport.init(flush_interval=0.005)
    stop = time.monotonic() + 2
    keep: list[taskreport.Task] = []

    def churn() -> None:
        while time.monotonic() < stop:
            t = taskreport.Task.create("beat")
            t.heartbeat(1000)
            keep.append(t)
            if len(keep) > 500:
                del keep[:250]

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    thread = client.flusher.thread
    assert thread is not None and thread.is_alive()
    last = taskreport.Task.create("still delivered")
    last.success()
    assert taskreport.flush(20) and last.id is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_worker_does_not_keep_its_parents_finished_task_alive() -> None:
    taskreport.init(flush_interval=0.05)
    job = taskreport.Task.create("parent job", status="processing", heartbeat=0.2)
    assert job.id is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            with taskreport.task("child work"):
                time.sleep(1.2)
            code = 0 if taskreport.flush(5) else 1
        finally:
            os._exit(locals().get("code", 2))
    time.sleep(0.2)
    job.success()
    assert taskreport.flush(5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert taskreport.get_task(job.id).status is Status.SUCCESS
