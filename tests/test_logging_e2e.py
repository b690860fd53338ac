"""The logging integration end to end, in real processes on the embedded store (and a real server): handlers
that report never deadlock the library whatever it logs and from whichever thread; records logged just
before a process leaves (normally, or through os._exit in a multiprocessing child, or after a fork) reach
their task; requests' and urllib3's records, made in the caller's thread inside a task, are never kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import taskreport
from taskreport.integrations.logging import LoggingIntegration

ROOT = Path(__file__).resolve().parent.parent


def run_script(body: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # faulthandler prints every thread's stack if the script hangs, so a deadlock fails with its cause
    script = f"import faulthandler; faulthandler.dump_traceback_later({timeout - 20:.0f}, exit=True)\n"
    return subprocess.run([sys.executable, "-c", script + textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), cwd=ROOT)


def messages(record: Any) -> list[str]:
    return [r["message"] for r in (record.data or {}).get("logs", [])]


def by_name(name: str) -> taskreport.TaskRecord:
    found = list(taskreport.list_tasks(name=name))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_handlers_that_report_never_deadlock_whatever_the_library_logs() -> None:
    done = run_script("""
        import logging, os, threading
        import taskreport
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from taskreport.integrations.logging import LoggingIntegration
        from taskreport.integrations.opentelemetry import OpenTelemetryIntegration
        from taskreport.testing import capture_tasks

        trace.set_tracer_provider(TracerProvider())   # so that status changes also run the span hooks
        taskreport.init(integrations=[LoggingIntegration(level="DEBUG", tail=20, error_status=True),
                                      OpenTelemetryIntegration(spans=True)], flush_interval=0.01)
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        logging.getLogger("taskreport").setLevel(logging.DEBUG)
        sink = taskreport.Task.create("sink", status="processing")

        class Reporting(logging.Handler):
            # reports on every record, the library's own included, from whichever thread logs it
            def emit(self, record):
                sink.update(data={"last": record.getMessage()[:40]})
                if record.levelno >= logging.ERROR:
                    taskreport.Task.create("seen-error").success()

        root.addHandler(Reporting())
        app = logging.getLogger("app")

        def work(n):
            for i in range(150):
                with taskreport.task(f"w{n}") as t:
                    app.info("working %d %d", n, i)
                    t.update(value="not a number")   # the sender refuses it and logs, from its own thread
                    t.heartbeat("soon")              # the library logs from this thread, a task current
                    if i % 25 == 0:
                        app.error("failed %d", i)    # error_status: a status change from inside logging
                    if i % 30 == 0:
                        taskreport.flush(10)

        def forking():
            pid = os.fork()
            if pid == 0:
                with taskreport.task("child"):
                    app.info("in the child")
                os._exit(0 if taskreport.flush(10) else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=forking))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # and with a recorder, whose deliveries run in the caller's thread, a task current
        with capture_tasks() as tasks:
            with taskreport.task("captured") as t:
                t.update(value="not a number")
                app.info("captured record")
                assert tasks.all()
        assert [r["message"] for r in tasks.get("captured").data["logs"]] == ["captured record"]
        assert taskreport.flush(30)
        print("ok")
    """)
    assert done.returncode == 0, done.stderr[-5000:]
    assert done.stdout.strip() == "ok"
    worked = [t for t in taskreport.list_tasks(name="w0", page_size=500)]
    assert len(worked) == 150
    assert {t.status for t in worked} == {taskreport.Status.SUCCESS}
    assert {messages(t)[0] for t in worked} >= {"working 0 0", "working 0 149"}
    assert messages(by_name("child")) == ["in the child"]
    assert by_name("sink").data["last"]


def test_records_logged_just_before_the_interpreter_exits_reach_their_running_task() -> None:
    done = run_script("""
        import logging, taskreport
        from taskreport.integrations.logging import LoggingIntegration

        taskreport.init(integrations=[LoggingIntegration()], flush_interval=60)
        log = logging.getLogger("app")
        log.setLevel(logging.INFO)
        task = taskreport.Task.create("left running", status="processing")
        with taskreport.use_task(task):
            for i in range(100):
                log.info("record %d", i)
    """)
    assert done.returncode == 0, done.stderr
    record = by_name("left running")
    assert messages(record)[-1] == "record 99" and len(messages(record)) == 50


def test_records_of_a_multiprocessing_child_that_leaves_through_os_exit_reach_their_task() -> None:
    done = run_script("""
        import logging, multiprocessing, taskreport
        from taskreport.integrations.logging import LoggingIntegration

        def child():
            taskreport.init(integrations=[LoggingIntegration()], flush_interval=60)
            log = logging.getLogger("child")
            log.setLevel(logging.INFO)
            task = taskreport.Task.create("child task", status="processing")
            with taskreport.use_task(task):
                for i in range(10):
                    log.info("child record %d", i)

        if __name__ == "__main__":
            p = multiprocessing.get_context("fork").Process(target=child)
            p.start()
            p.join(60)
            raise SystemExit(p.exitcode)
    """)
    assert done.returncode == 0, done.stderr
    assert messages(by_name("child task"))[-1] == "child record 9"


def test_requests_and_urllib3_records_made_inside_a_task_are_never_kept(sqlite_server: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # requests carries the requests where a proxy is set (the default wire logs nothing of its own)
    from taskreport import _http
    from taskreport._wire import RequestsWire

    monkeypatch.setattr(_http, "default_wire", RequestsWire)
    taskreport.init(url=sqlite_server.url, token=sqlite_server.token, organization=sqlite_server.organization,
                    project=sqlite_server.project, integrations=[LoggingIntegration(level="DEBUG")])
    noisy = [logging.getLogger(name) for name in ("urllib3", "requests")]
    levels = [logger.level for logger in noisy]
    seen: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.name)

    handler = Seen()
    try:
        for logger in noisy:
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
        other = taskreport.Task.create("other")
        assert other.wait_id(10)
        with taskreport.task("fetching") as task:
            taskreport.get_task(other.wait_id(10) or "")  # a synchronous GET in this thread, the task current
            logging.getLogger("app").warning("kept")
        assert taskreport.flush(10)
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)
            logger.removeHandler(handler)
    assert any(name.startswith("urllib3") for name in seen)  # they did log, in this thread
    assert messages(taskreport.get_task(task.wait_id(10) or "")) == ["kept"]
