"""Task references: a task is known from the moment it is created, in this process and in others.

Another process attaches to a task by its reference, or names it as a parent, before or after the creator's
create reaches the service; either way there is one task. Run on the embedded store and against real servers
(SQLite and PostgreSQL) over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from faultproxy import FaultProxy, init_through
from server_fixtures import LiveServer

import taskreport
from taskreport import Status, ValidationError

Configure = Callable[..., taskreport.Client]


def child_env() -> dict[str, str]:
    """The environment that points a child process at the same place as this one's client."""
    config = taskreport.get_client().config
    env = dict(os.environ)
    if not config.embedded:
        assert config.url is not None and config.token is not None
        env.update(TASKREPORT_URL=config.url, TASKREPORT_TOKEN=config.token,
                   TASKREPORT_ORG=config.organization, TASKREPORT_PROJECT=config.project)
    return env


def run(body: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(body), *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


ATTACH = """
    import sys, taskreport
    t = taskreport.Task.attach(sys.argv[1])
    t.processing(data={"worker": "attached"})
    t.update(value=5)
    if sys.argv[2] == "end":
        t.success()
    assert taskreport.flush(10)
"""


def test_a_reference_is_there_at_creation_and_unique() -> None:
    taskreport.init(flush_interval=60)
    tasks = [taskreport.Task.create(f"t{i}") for i in range(1000)]
    refs = {t.ref for t in tasks}
    assert len(refs) == 1000
    assert all(16 <= len(r) <= 64 for r in refs)
    assert taskreport.stats()["requests"] == 0  # nothing was sent to make them
    assert all(t.id is None for t in tasks)  # and reading the id never waits


def test_attach_in_another_process_after_the_create_landed_updates_the_same_task(backend: Configure) -> None:
    t = taskreport.Task.create("job", status="pending", data={"args": [1, 2]}, tags={"queue": "qq"})
    assert t.wait_id(10) is not None
    run(ATTACH, t.ref, "end")
    (record,) = taskreport.list_tasks(name="job")
    assert (record.id, record.status, record.value) == (t.id, Status.SUCCESS, 5)
    assert record.ref == t.ref
    # the attaching process knew nothing of the creator's data: its own keys are added, none erased
    assert record.data == {"args": [1, 2], "worker": "attached"} and record.tags == {"queue": "qq"}


def test_attach_before_the_create_lands_still_makes_one_task(backend: Configure) -> None:
    backend(flush_interval=60)
    t = taskreport.Task.create("published", status="pending", tags={"queue": "default"}, data={"args": [1]})
    run(ATTACH, t.ref, "running")  # the worker starts before the publisher has sent anything
    assert taskreport.flush(10)
    (record,) = taskreport.list_tasks()
    assert record.name == "published" and record.ref == t.ref
    # the create filled in what the worker did not set, and did not move the status back to pending
    assert (record.status, record.value) == (Status.PROCESSING, 5)
    assert record.tags == {"queue": "default"}
    assert record.data == {"args": [1], "worker": "attached"}


def test_a_create_arriving_after_the_task_finished_never_reopens_it(backend: Configure) -> None:
    backend(flush_interval=60)
    t = taskreport.Task.create("late create", status="pending")
    run(ATTACH, t.ref, "end")  # the whole task ran and ended elsewhere first
    assert taskreport.flush(10)
    (record,) = taskreport.list_tasks()
    assert (record.name, record.status, record.value) == ("late create", Status.SUCCESS, 5)


def test_a_reference_names_a_parent_in_another_process(backend: Configure) -> None:
    backend(flush_interval=60)
    parent = taskreport.Task.create("parent", status="processing")
    env_child = """
        import taskreport
        with taskreport.task("child of the environment's parent"):
            pass
        assert taskreport.flush(10)
    """
    os.environ["TASKREPORT_PARENT"] = parent.ref
    try:
        run(env_child)
    finally:
        del os.environ["TASKREPORT_PARENT"]
    parent.success()
    assert taskreport.flush(10)
    records = {r.name: r for r in taskreport.list_tasks()}
    assert records["child of the environment's parent"].parent == records["parent"].id
    assert records["parent"].status is Status.SUCCESS


def test_attach_refuses_what_is_not_a_reference() -> None:
    for bad in ("", "short", "has spaces in it here", "x" * 65, 42):
        with pytest.raises(ValidationError) as info:
            taskreport.Task.attach(bad)  # type: ignore[arg-type]
        assert info.value.attr == "ref"


def test_a_bad_parent_reference_in_the_environment_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TASKREPORT_PARENT", "not a ref!")
    taskreport.init()
    t = taskreport.Task.create("orphan")
    assert t.parent is None
    assert "TASKREPORT_PARENT" in caplog.text


def test_reading_the_id_never_waits_for_a_slow_service(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    init_through(proxy, sqlite_server, flush_interval=0.05)
    proxy.delay = 1.0
    t = taskreport.Task.create("slow")
    start = time.monotonic()
    for i in range(1000):
        assert t.id is None or i > 0
        t.update(value=i)
    assert time.monotonic() - start < 0.2
    proxy.delay = 0
    assert t.wait_id(10) is not None and taskreport.flush(10)


def test_on_a_stock_server_the_creator_is_exact_and_an_attach_is_a_marked_second_task(
    sqlite_server: LiveServer, proxy: FaultProxy
) -> None:
    proxy.stock = True
    init_through(proxy, sqlite_server, flush_interval=60)
    t = taskreport.Task.create("stock", status="pending")
    child = taskreport.Task.create("its child", parent=t)
    child.success()
    assert t.wait_id(10) is not None and taskreport.flush(10)
    assert not [s for s in proxy.forwarded("POST") if "/batch" in s.path]
    out = run(ATTACH.replace("assert taskreport.flush(10)", "assert taskreport.flush(10); print('ok')"), t.ref, "end")
    assert out == "ok"
    assert taskreport.flush(10)
    records = list(taskreport.list_tasks())
    by_name: dict[str, list[taskreport.TaskRecord]] = {}
    for r in records:
        by_name.setdefault(r.name, []).append(r)
    assert by_name["its child"][0].parent == t.id  # the child waited a round for its parent's id
    # the attaching process could not find the task by reference: it made one, marked, and said so
    (marked,) = [r for r in records if isinstance(r.data, dict) and r.data.get("taskreport_ref") == t.ref]
    assert marked.status is Status.SUCCESS and marked.value == 5
    assert taskreport.get_task(t.id).status is Status.PENDING  # the original is untouched, not lost


def test_the_batch_operation_merges_data_only_when_asked(live_server: LiveServer) -> None:
    import web

    url = live_server.tasks_url + "batch/"
    with web.client(headers=live_server.headers(), timeout=10) as http:
        ref = "merge-test-reference-01"
        http.post(url, json={"operations": [{"op": "create", "ref": ref, "fields": {"name": "m", "data": {"a": 1}}}]})
        merged = http.post(url, json={"operations": [
            {"op": "update", "ref": ref, "fields": {"data": {"b": 2}}, "merge": True}]}).json()["results"][0]
        assert merged["status"] == 200
        task = http.get(live_server.tasks_url + merged["id"] + "/").json()
        assert task["data"] == {"a": 1, "b": 2}
        http.post(url, json={"operations": [{"op": "update", "ref": ref, "fields": {"data": {"c": 3}}}]})
        assert http.get(live_server.tasks_url + merged["id"] + "/").json()["data"] == {"c": 3}  # as PATCH does
        bad = http.post(url, json={"operations": [
            {"op": "update", "ref": ref, "fields": {}, "merge": "yes"}]}).json()["results"][0]
        assert bad["status"] == 400 and bad["errors"][0]["attr"] == "merge"
