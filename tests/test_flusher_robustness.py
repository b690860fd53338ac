"""What must not stop reporting: odd input on the hot path, a task the service always refuses, odd answers,
heartbeats changing while the thread runs, a full pending map, and forks of a task with a heartbeat."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
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
    proxy.stock = True  # one request per task, so that one task's requests can fail alone
    proxy.fail_when(lambda method, path, body: isinstance(body, dict) and body.get("name") == "bad", 500)
    init_through(proxy, sqlite_server, flush_interval=0.05)
    bad = taskreport.Task.create("bad")
    good = [taskreport.Task.create(f"good{i}") for i in range(3)]
    for t in good:
        t.success()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(t.id for t in good):
        taskreport.flush(0.5)
    assert all(t.id for t in good)
    assert set(names_on(sqlite_server)) == {"good0", "good1", "good2"}
    assert bad.id is None and taskreport.stats()["pending"] <= 1  # still kept, still retried
    assert len([s for s in proxy.requests("POST") if s.body.get("name") == "bad"]) >= 2


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
    assert taskreport.flush(5) and later.wait_id(10) is not None
    assert "after" in names_on(sqlite_server)


def test_changes_that_find_the_pending_map_full_are_kept_not_lost() -> None:
    taskreport.init(flush_interval=30, max_pending=1)
    first = taskreport.Task.create("first")  # takes the only place
    second = taskreport.Task.create("second")
    for _ in range(10):
        second.increment()
    second.update(data={"kept": True})
    assert taskreport.stats()["overflowed"] > 0
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
        # heartbeats set and dropped under the thread for 2 s, a bounded number of tasks: this is about the
        # thread surviving the churn, not about how fast a loaded machine can store tasks
        for _ in range(3000):
            if time.monotonic() > stop:
                break
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
    thread = client.sender.thread
    assert thread is not None and thread.is_alive()
    last = taskreport.Task.create("still delivered")
    last.success()
    assert taskreport.flush(20) and last.wait_id(10) is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_worker_does_not_keep_its_parents_finished_task_alive() -> None:
    taskreport.init(flush_interval=0.05)
    job = taskreport.Task.create("parent job", status="processing", heartbeat=0.2)
    assert job.wait_id(10) is not None
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


def test_an_explicitly_closed_client_never_sends_its_handles_elsewhere(isolated: Path) -> None:
    other = taskreport.Client(taskreport.Config(project="other", home=isolated))
    t = other.create_task("belongs to other")
    assert t.wait_id(5) is not None
    other.close()
    taskreport.init()  # the process-wide client, project "default"
    t.success()  # must not go to "default": spooled for "other" instead
    assert taskreport.flush(5)
    assert list(taskreport.list_tasks()) == []
    assert len(list((isolated / "spool").glob("*.json"))) == 1


def test_init_while_a_request_hangs_moves_the_end_to_the_new_client(sqlite_server: LiveServer,
                                                                    proxy: FaultProxy) -> None:
    init_through(proxy, sqlite_server, flush_interval=0.05, exit_timeout=0.5, request_timeout=5)
    t = taskreport.Task.create("moved")
    assert t.wait_id(10) is not None
    proxy.delay = 3  # the end's request hangs on the old client's thread
    t.success()
    time.sleep(0.3)
    proxy.delay = 0
    init_through(proxy, sqlite_server)  # gives up waiting after exit_timeout and moves the end along
    assert taskreport.flush(10)
    assert names_on(sqlite_server)["moved"]["status"] == "success"


def test_bad_arguments_at_the_call_site_name_the_field() -> None:
    for kwargs, attr in (({"heartbeat": "5"}, "heartbeat"), ({"heartbeat": float("nan")}, "heartbeat"),
                         ({"tags": ["a:b"]}, "tags")):
        with pytest.raises(taskreport.ValidationError) as info:
            taskreport.Task.create("x", **kwargs)
        assert info.value.attr == attr


def test_error_never_raises_whatever_it_is_given() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    t = taskreport.Task.create("odd error")
    t.error(Unprintable(), data=[1, 2])
    assert taskreport.flush(5)
    record = taskreport.get_task(t.id or "")
    assert record.status is Status.ERROR
    assert record.data["data"] == [1, 2] and "Unprintable" in record.data["exception"]


def test_a_spool_left_by_an_earlier_process_with_this_pid_is_claimed(isolated: Path) -> None:
    from taskreport import _spool

    config = taskreport.init().config
    t = taskreport.Task.create("from a previous life")
    directory = isolated / "spool"
    path = _spool.write(directory, config.target, [_spool.record_of(t.entry, dict(t.entry.view))])
    assert path is not None
    assert _spool.claim(directory, config.target) == []  # this process's own file: it still holds the handle
    # the same pid, another process (a container's pid 1 restarted): its files are claimable
    renamed = path.with_name(path.name.replace(f"-{_spool._token}-", "-0123456789ab-"))
    path.rename(renamed)
    claimed = _spool.claim(directory, config.target)
    assert len(claimed) == 1 and claimed[0][1][0]["create"]["name"] == "from a previous life"
