"""Every process delivers its task ends when it exits, however it was started (billiard's pool workers leave
through os._exit from inside the worker); and a logging handler that reports can never deadlock the library,
whatever the library logs. Each scenario runs in a real subprocess, on the embedded store."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import taskreport


def run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_billiard_pool_workers_recycled_after_each_task_lose_no_end() -> None:
    pytest.importorskip("billiard", reason="billiard is not installed (pip install 'taskreport[celery]')")
    done = run_script("""
        import billiard, taskreport

        def work(i):
            t = taskreport.Task.create(f"billiard-{i}")
            t.update(value=i)
            t.success()
            return i

        if __name__ == "__main__":
            with billiard.Pool(2, maxtasksperchild=1) as pool:
                assert pool.map(work, range(20)) == list(range(20))
                pool.close()
                pool.join()
    """, timeout=120)
    assert done.returncode == 0, done.stderr
    ended = [t for t in taskreport.list_tasks() if t.name.startswith("billiard-")]
    assert len(ended) == 20
    assert {t.status for t in ended} == {taskreport.Status.SUCCESS}
    assert sorted(t.value or 0 for t in ended) == list(range(20))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_reporting_log_handler_never_deadlocks_on_the_librarys_own_records() -> None:
    done = run_script("""
        import logging, os, taskreport
        taskreport.init(flush_interval=60)
        before = taskreport.Task.create("made before fork")   # unsent: the child logs about it
        pid = os.fork()
        if pid == 0:
            sink = taskreport.Task.create("log sink")
            class Reporting(logging.Handler):
                def emit(self, record):
                    sink.update(data={"last_log": record.getMessage()[:50]})
            logging.getLogger("taskreport").addHandler(Reporting())
            before.update(value=1)
            before.heartbeat("not a number")                  # the library logs from the caller's thread
            sink.update(status="stale")                       # and from its sender thread (refused field)
            ok = taskreport.flush(10)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
    """, timeout=30)
    assert done.returncode == 0, done.stderr


def test_a_reporting_log_handler_sees_records_from_the_sender_thread(caplog: pytest.LogCaptureFixture) -> None:
    taskreport.init(flush_interval=0.05)
    sink = taskreport.Task.create("sink")
    seen: list[str] = []

    class Reporting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            sink.update(data={"logs": len(seen)})  # takes the library's lock from inside its logging

    handler = Reporting()
    logging.getLogger("taskreport").addHandler(handler)
    try:
        bad = taskreport.Task.create("bad")
        bad.update(value="not a number")  # refused by the sender thread, which logs it
        assert taskreport.flush(5)
    finally:
        logging.getLogger("taskreport").removeHandler(handler)
    assert seen and sink.data == {"logs": len(seen)}



def test_flush_from_a_handler_on_the_librarys_own_records_returns(caplog: pytest.LogCaptureFixture) -> None:
    taskreport.init(flush_interval=0.05)
    results: list[bool] = []

    class Flushing(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            results.append(taskreport.flush(1))  # on the sender's own thread: must not wait for itself

    handler = Flushing()
    logging.getLogger("taskreport").addHandler(handler)
    try:
        taskreport.Task.create("bad").update(value="not a number")  # refused on the sender thread, which logs
        assert taskreport.flush(5)
    finally:
        logging.getLogger("taskreport").removeHandler(handler)
    assert results and results[0] is False


def test_a_process_that_reports_nothing_leaves_the_spool_alone(isolated: Path) -> None:
    spool = isolated / "spool"
    spool.mkdir(parents=True)
    left = spool / "1.000000-1-0123456789ab-00000000.json"
    left.write_text('{"version": 2, "target": "elsewhere", "records": []}')
    done = run_script("""
        import taskreport
        list(taskreport.list_tasks())   # a client, and no task of its own
    """)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in spool.iterdir()] == [left.name]
