"""Forked children (Celery prefork does this) report on their own; the parent's pending state is not sent
twice; and forking while another thread updates never deadlocks."""

from __future__ import annotations

import os
import threading
import time

import pytest

import taskreport

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def wait_child(pid: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} hung (deadlock?)")


def run_in_child(body) -> int:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            code = body()
        finally:
            os._exit(code)
    return wait_child(pid)


def test_child_updates_arrive_and_parent_pending_is_not_duplicated() -> None:
    taskreport.init(flush_interval=30)
    target = taskreport.Task.create("child updates me")
    assert target.wait_id(10) is not None
    unsent = taskreport.Task.create("created in parent, unsent at fork")
    unsent.update(value=7)

    def child() -> int:
        target.update(value=42)
        own = taskreport.Task.create("from child")
        own.success()
        return 0 if taskreport.flush(10) else 1

    assert run_in_child(child) == 0
    assert taskreport.flush(10)
    names = sorted(t.name for t in taskreport.list_tasks())
    assert names == ["child updates me", "created in parent, unsent at fork", "from child"]
    assert taskreport.get_task(target.id).value == 42
    assert next(iter(taskreport.list_tasks(name="created in parent, unsent at fork"))).value == 7


def test_fifty_forks_while_another_thread_updates_do_not_deadlock() -> None:
    taskreport.init(flush_interval=0.05)
    busy = taskreport.Task.create("busy")
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            busy.update(value=i)
            busy.increment()
            i += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for i in range(50):

            def child(i: int = i) -> int:
                busy.update(value=1)  # the lock the other thread was hammering is usable here
                task = taskreport.Task.create(f"fork-{i}")
                task.success()
                return 0 if taskreport.flush(10) else 1

            assert run_in_child(child) == 0, f"fork {i} failed to deliver"
    finally:
        stop.set()
        thread.join()
    busy.success()
    assert taskreport.flush(10)
    forks = [t for t in taskreport.list_tasks(page_size=200) if t.name.startswith("fork-")]
    assert len(forks) == 50 and all(t.status is taskreport.Status.SUCCESS for t in forks)


def test_flusher_thread_restarts_in_child() -> None:
    taskreport.init(flush_interval=0.05)
    warm = taskreport.Task.create("warm")  # starts the parent's thread
    assert warm.wait_id(10) is not None

    def child() -> int:
        task = taskreport.Task.create("background in child")
        task.success()
        # no explicit flush: the child's own flusher thread must deliver it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if taskreport.stats()["pending"] == 0 and task.id is not None:
                return 0
            time.sleep(0.02)
        return 1

    assert run_in_child(child) == 0
    assert [t.name for t in taskreport.list_tasks(name="background in child")] == ["background in child"]


def test_a_task_unsent_at_fork_is_named_by_its_reference_in_the_child() -> None:
    taskreport.init(flush_interval=30)
    unsent = taskreport.Task.create("parent's, unsent")

    def child() -> int:
        start = time.monotonic()
        if unsent.wait_id(10) is not None or time.monotonic() - start > 1:
            return 1  # its create is the parent's to send: the child does not wait for it
        kid = taskreport.Task.create("child's", parent=unsent)
        kid.success()
        unsent.update(value=3)  # goes by reference, wherever the create is
        return 0 if taskreport.flush(10) else 2

    assert run_in_child(child) == 0
    assert taskreport.flush(10)
    names = {t.name: t for t in taskreport.list_tasks()}
    assert set(names) == {"parent's, unsent", "child's"}
    # the child's task arrived first, naming a parent the service had not seen: one task, linked
    assert names["child's"].parent == names["parent's, unsent"].id
    assert names["parent's, unsent"].value == 3


def test_multiprocessing_children_deliver_without_an_explicit_flush() -> None:
    import multiprocessing

    taskreport.init(flush_interval=30)
    assert taskreport.Task.create("warm").wait_id(10) is not None
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_mp_job, args=(i,)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    names = sorted(t.name for t in taskreport.list_tasks() if t.name.startswith("mp-"))
    assert names == ["mp-0", "mp-1", "mp-2"]


def _mp_job(i: int) -> None:
    t = taskreport.Task.create(f"mp-{i}")
    t.update(value=i)
    t.success()  # no flush: multiprocessing exits with os._exit, past atexit


def test_multiprocessing_child_that_makes_its_own_client_delivers() -> None:
    import multiprocessing

    taskreport.shutdown()  # no client in the parent at fork time
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_mp_job, args=(7,))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0
    assert [t.name for t in taskreport.list_tasks()] == ["mp-7"]


def test_a_forked_childs_stats_are_its_own() -> None:
    taskreport.init(flush_interval=30)
    for i in range(5):
        taskreport.Task.create(f"parent-{i}").success()
    assert taskreport.flush(10) and taskreport.stats()["requests"] >= 5

    def child() -> int:
        stats = taskreport.stats()
        return 0 if stats["requests"] == 0 and stats["merged"] == 0 else 1

    assert run_in_child(child) == 0
