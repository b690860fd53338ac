"""The client against every backend (embedded store, real server on SQLite and PostgreSQL over HTTP):
creation, updates, coalescing, validation, limits, reading back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import taskreport
from taskreport import Status, ValidationError

Configure = Callable[..., taskreport.Client]


def recorded(task: taskreport.Task) -> taskreport.TaskRecord:
    assert taskreport.flush(10)
    task_id = task.id
    assert task_id is not None
    return taskreport.get_task(task_id)


def test_a_job_is_recorded_with_its_final_state(backend: Configure) -> None:
    t = taskreport.Task.create("import", value_max=200, tags={"env": "test"})
    t.processing()
    for i in range(1, 201):
        t.update(value=i)
    t.success(data={"rows": 200})
    record = recorded(t)
    assert record.name == "import"
    assert record.status is Status.SUCCESS
    assert (record.value, record.value_max, record.value_percent) == (200, 200, 100)
    assert record.data == {"rows": 200}
    assert record.tags == {"env": "test"}
    assert record.start_time is not None and record.end_time is not None
    assert record.start_time <= record.end_time
    config = taskreport.get_client().config
    assert (record.organization, record.project) == (config.organization, config.project)


def test_updates_within_one_interval_coalesce_into_one_write(backend: Configure) -> None:
    backend(flush_interval=30)
    t = taskreport.Task.create("coalesce")
    for i in range(10_000):
        t.update(value=i)
    t.success()
    record = recorded(t)
    assert record.value == 9_999 and record.status is Status.SUCCESS
    stats = taskreport.stats()
    assert stats["requests"] == 1  # a single create carried the final state
    assert stats["merged"] == 10_002


def test_finished_task_reports_client_side_times(backend: Configure) -> None:
    t = taskreport.Task.create("timed")
    before = time.time()
    t.processing()
    time.sleep(0.3)
    t.success()
    after = time.time()
    time.sleep(0.3)  # the service must not stamp the times when the change arrives
    record = recorded(t)
    assert record.start_time is not None and record.end_time is not None
    assert before <= record.start_time.timestamp() < before + 0.2
    assert after - 0.2 < record.end_time.timestamp() <= after


def test_data_and_tags_merge_on_the_client(backend: Configure) -> None:
    t = taskreport.Task.create("merge", data={"a": 1}, tags={"team": "ops"})
    assert taskreport.flush(5)
    t.update(data={"b": 2}, tags={"env": "prod"})
    t.update(data={"a": 3})
    record = recorded(t)
    assert record.data == {"a": 3, "b": 2}
    assert record.tags == {"team": "ops", "env": "prod"}


def test_parent_is_created_before_its_child_in_one_cycle(backend: Configure) -> None:
    backend(flush_interval=30)
    parent = taskreport.Task.create("parent")
    child = taskreport.Task.create("child", parent=parent)
    child.success()
    parent.success()
    child_record = recorded(child)
    assert child_record.parent == parent.id
    assert [t.name for t in taskreport.list_tasks(parent=parent.id)] == ["child"]


def test_create_rejects_invalid_fields_naming_them(backend: Configure) -> None:
    with pytest.raises(ValidationError) as info:
        taskreport.Task.create("x" * 256)
    assert info.value.attr == "name"
    with pytest.raises(ValidationError) as info:
        taskreport.Task.create("ok", value=-1)
    assert info.value.attr == "value"
    with pytest.raises(ValidationError) as info:
        taskreport.Task.create("ok", colour="red")
    assert info.value.attr == "colour"


def test_invalid_update_is_logged_not_raised_and_valid_fields_still_arrive(
    backend: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    t = taskreport.Task.create("lenient")
    assert taskreport.flush(5)
    with caplog.at_level(logging.ERROR, logger="taskreport"):
        t.update(value=-5, data={"ok": True})  # no exception into user code
        record = recorded(t)
    assert record.value is None and record.data == {"ok": True}
    assert "value" in caplog.text
    assert taskreport.stats()["failed"] == 1


def test_strict_mode_raises_at_the_call_site(backend: Configure) -> None:
    backend(strict=True)
    t = taskreport.Task.create("strict")
    with pytest.raises(ValidationError) as info:
        t.update(value=2**63)
    assert info.value.attr == "value"
    with pytest.raises(ValidationError) as info:
        t.update(status="finished")
    assert info.value.attr == "status"


def test_a_full_pending_map_keeps_changes_in_the_tasks_and_loses_nothing(backend: Configure) -> None:
    backend(flush_interval=30, max_pending=3)
    tasks = [taskreport.Task.create(f"t{i}") for i in range(3)]
    extra = taskreport.Task.create("over the limit")
    extra.update(value=1)
    last = taskreport.Task.create("finishes")
    last.success()
    stats = taskreport.stats()
    # the creates of "over the limit" and "finishes" and the update found the map full: they wait in their
    # tasks (memory follows the tasks, not the updates); the end got in, with its task's whole state
    assert stats["overflowed"] == 3 and stats["pending"] == 5
    assert taskreport.flush(10)
    by_name = {t.name: t for t in taskreport.list_tasks()}
    assert sorted(by_name) == sorted([t.name for t in tasks] + ["finishes", "over the limit"])
    assert by_name["over the limit"].value == 1 and by_name["finishes"].status is Status.SUCCESS


def test_increment_and_set_total(backend: Configure) -> None:
    t = taskreport.Task.create("count")
    t.set_total(40)
    for _ in range(10):
        t.increment(2)
    assert t.value == 20
    record = recorded(t)
    assert (record.value, record.value_max, record.value_percent) == (20, 40, 50)


def test_error_records_exception_details(backend: Configure) -> None:
    t = taskreport.Task.create("fails")
    try:
        raise KeyError("missing")
    except KeyError as exc:
        t.error(exc, data={"row": 7})
    record = recorded(t)
    assert record.status is Status.ERROR
    assert record.data["exception"] == "builtins.KeyError"
    assert "missing" in record.data["message"]
    assert "Traceback" in record.data["traceback"] and record.data["row"] == 7


def test_actions_added_through_the_task_reach_the_store(backend: Configure) -> None:
    t = taskreport.Task.create("with action")
    t.add_action("success", "webhook:hook", {"url": "http://127.0.0.1:9/x"})
    task_id = t.wait_id(5)
    assert task_id is not None and taskreport.flush(5)
    actions = taskreport.get_client().list_actions(task_id)
    assert [(a.trigger, a.integration) for a in actions] == [("success", "webhook:hook")]


def test_list_filters_and_pages(backend: Configure) -> None:
    for i in range(7):
        taskreport.Task.create(f"job{i}", status="success" if i % 2 else "processing", tags={"n": f"n{i % 3}"})
    assert taskreport.flush(5)
    assert len(list(taskreport.list_tasks())) == 7
    assert len(list(taskreport.list_tasks(status="success"))) == 3
    assert {t.name for t in taskreport.list_tasks(tag="n:n0")} == {"job0", "job3", "job6"}
    pages = list(taskreport.list_tasks(page_size=3).pages())
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [t.name for p in pages for t in p] == [f"job{i}" for i in range(6, -1, -1)]


def test_attach_updates_an_existing_task(backend: Configure) -> None:
    t = taskreport.Task.create("attach me")
    task_id = t.wait_id(5)
    assert task_id is not None
    other = taskreport.Task.get(task_id)
    other.update(value=5)
    other.success()
    record = recorded(other)
    assert record.id == task_id and record.value == 5 and record.status is Status.SUCCESS


def test_disabled_reporting_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.shutdown()
    t = taskreport.Task.create("ignored", value=-1)  # not even validated
    t.update(value=3)
    t.success()
    assert t.id is None
    assert taskreport.flush(1)
    assert not (isolated / "taskreport.db").exists()
    with pytest.raises(taskreport.ConfigurationError):
        taskreport.list_tasks()


def test_token_never_in_reprs() -> None:
    client = taskreport.init(url="https://tasks.example.com", token="s3cret-token-value")
    assert "s3cret" not in repr(client)
    assert "s3cret" not in repr(client.config)
    assert "s3cret" not in repr(client.transport)


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(taskreport.ConfigurationError, match="plain HTTP"):
        taskreport.init(url="http://tasks.example.com", token="t")
    client = taskreport.init(url="http://tasks.example.com", token="t", allow_insecure_http=True)
    assert client.transport is not None
    taskreport.init(url="http://127.0.0.1:9", token="t")  # loopback is fine
    taskreport.init(url="http://localhost:9", token="t")
    taskreport.init(url="http://[::1]:9", token="t")


def test_increment_never_raises_after_a_bad_value(backend: Configure) -> None:
    t = taskreport.Task.create("bad then good")
    t.update(value="seven")  # invalid, but the hot path must not raise
    t.increment(2)
    record = recorded(t)
    assert record.value == 2


def test_an_explicit_grandparent_becomes_a_sibling(backend: Configure) -> None:
    top = taskreport.Task.create("top")
    middle = taskreport.Task.create("middle", parent=top)
    leaf = taskreport.Task.create("leaf", parent=middle)
    leaf.success()
    assert recorded(leaf).parent == top.id


def test_handles_follow_a_new_client_after_init(backend: Configure) -> None:
    t = taskreport.Task.create("survives init")
    assert t.wait_id(5) is not None
    backend(flush_interval=0.1)  # replaces the client
    t.update(value=5)
    t.success()
    record = recorded(t)
    assert (record.value, record.status) == (5, Status.SUCCESS)


def test_unknown_list_filter_is_rejected_by_name(backend: Configure) -> None:
    with pytest.raises(ValidationError) as info:
        taskreport.list_tasks(colour="red")
    assert info.value.attr == "colour"


def test_time_to_start_is_measured_by_the_client(backend: Configure) -> None:
    import time

    t = taskreport.Task.create("waits in a queue")
    time.sleep(0.2)
    t.processing()
    t.success()
    record = recorded(t)
    assert record.time_to_start is not None and 0.19 <= record.time_to_start < 2


def test_an_end_after_shutdown_is_spooled_for_the_next_process(isolated: Path) -> None:
    import subprocess
    import sys

    t = taskreport.Task.create("outlives shutdown")
    assert t.wait_id(5) is not None
    taskreport.shutdown()
    t.update(value=9)  # nobody sends this on its own any more...
    t.success()  # ...but an end is never lost: it goes to the spool, with what came before it
    assert len(list((isolated / "spool").glob("*.json"))) == 1
    cli = Path(sys.executable).parent / "taskreport"
    done = subprocess.run([str(cli), "flush-spool"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "delivered 1" in done.stdout, done.stderr
    record = taskreport.get_task(t.id)
    assert (record.value, record.status) == (9, Status.SUCCESS)


def test_a_disabled_task_has_no_reference_to_hand_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.shutdown()
    t = taskreport.Task.create("off")
    assert t.ref == ""
    monkeypatch.delenv("TASKREPORT_DISABLED")
    taskreport.shutdown()
    with pytest.raises(ValidationError):  # where reporting is on, nothing can attach to it
        taskreport.Task.attach(t.ref)


def test_a_refused_configuration_says_why_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_URL", "http://203.0.113.9:8000")  # plain HTTP to another machine
    taskreport.shutdown()
    taskreport.Task.create("not reported").success()  # the user's code goes on
    with pytest.raises(taskreport.ConfigurationError, match="plain HTTP"):
        taskreport.list_tasks()
