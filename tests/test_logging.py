"""The logging integration: records on tasks (a bounded tail, coalesced, never blocking), tasks on records
(format fields and a filter), error marking, structlog, and no recursion into the library's own logging."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskreport
from taskreport import Status, ValidationError
from taskreport.integrations.logging import LoggingIntegration, TaskFilter, structlog_processor
from taskreport.testing import TaskRecorder, capture_tasks


@pytest.fixture
def log(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of this test's own, at DEBUG, with no handler and no propagation."""
    logger = logging.getLogger(f"app.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


@pytest.fixture
def tasks() -> Iterator[TaskRecorder]:
    with capture_tasks(integrations=[LoggingIntegration()]) as recorder:
        yield recorder


def messages(record: Any, key: str = "logs") -> list[str]:
    return [r["message"] for r in record.data.get(key, [])]


def test_records_logged_while_a_task_is_current_land_on_it(tasks: TaskRecorder, log: logging.Logger) -> None:
    log.info("before any task")
    with taskreport.task("job"):
        log.info("item %d of %s", 1, "batch")
        log.warning("slow item")
    log.info("after the task")
    record = tasks.get("job")
    assert messages(record) == ["item 1 of batch", "slow item"]
    first, second = record.data["logs"]
    assert (first["level"], first["logger"], second["level"]) == ("INFO", log.name, "WARNING")
    assert abs(first["time"] - time.time()) < 60
    assert record.status == Status.SUCCESS and "log_error" not in record.data


def test_the_tail_keeps_the_latest_records_at_or_above_the_level(log: logging.Logger) -> None:
    with capture_tasks(integrations=[LoggingIntegration(tail=3, level="WARNING")]) as tasks, taskreport.task("job"):
        for i in range(10):
            log.warning("warning %d", i)
            log.info("info %d", i)
    assert messages(tasks.get("job")) == ["warning 7", "warning 8", "warning 9"]


def test_the_records_go_to_the_innermost_current_task(tasks: TaskRecorder, log: logging.Logger) -> None:
    with taskreport.task("outer"):
        log.info("in outer")
        with taskreport.task("inner"):
            log.info("in inner")
        log.info("in outer again")
    assert messages(tasks.get("outer")) == ["in outer", "in outer again"]
    assert messages(tasks.get("inner")) == ["in inner"]


def test_long_messages_are_cut_and_the_tail_continues_a_tail_the_data_already_has(log: logging.Logger) -> None:
    with capture_tasks(integrations=[LoggingIntegration(tail=3, max_message=20)]) as tasks:
        task = taskreport.Task.create("job", status="processing",
                                      data={"logs": [{"message": "from before"}], "other": 1})
        with taskreport.use_task(task):
            log.info("x" * 100)
        task.success()
    record = tasks.get("job")
    assert messages(record) == ["from before", "x" * 19 + "…"]
    assert record.data["other"] == 1


def test_an_error_record_marks_the_task_without_changing_its_status(tasks: TaskRecorder,
                                                                     log: logging.Logger) -> None:
    task = taskreport.Task.create("job", status="processing")
    with taskreport.use_task(task):
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed for %s", "missing")
        log.info("carried on")
        record = tasks.get("job")
        assert record.status == Status.PROCESSING
        error = record.data["log_error"]
        assert (error["level"], error["logger"], error["message"]) == ("ERROR", log.name, "lookup failed for missing")
        assert error["exception"] == "builtins.KeyError" and "missing" in error["exception_message"]
        assert "Traceback" in error["traceback"]
        log.error("a plain error")
    task.success()
    record = tasks.get("job")
    assert record.status == Status.SUCCESS
    assert record.data["log_error"]["message"] == "a plain error" and "exception" not in record.data["log_error"]
    assert messages(record) == ["lookup failed for missing", "carried on", "a plain error"]


def test_error_status_sets_the_status_and_error_level_none_marks_nothing(log: logging.Logger) -> None:
    with capture_tasks(integrations=[LoggingIntegration(error_status=True, error_level="CRITICAL")]) as tasks:
        task = taskreport.Task.create("job", status="processing")
        with taskreport.use_task(task):
            log.error("not critical")
            assert tasks.get("job").status == Status.PROCESSING
            log.critical("critical")
        record = tasks.get("job")
        assert record.status == Status.ERROR and record.data["log_error"]["message"] == "critical"
    with capture_tasks(integrations=[LoggingIntegration(error_level=None)]) as tasks, taskreport.task("job"):
        log.critical("critical")
    assert "log_error" not in tasks.get("job").data and messages(tasks.get("job")) == ["critical"]


def test_the_librarys_own_records_and_http_clients_records_are_never_attached(log: logging.Logger) -> None:
    integration = LoggingIntegration(level="DEBUG", ignore=["noisy"])
    with capture_tasks(integrations=[integration]) as tasks, taskreport.task("job"):
        for name in ("taskreport", "taskreport.flusher", "requests", "requests.adapters", "urllib3",
                     "urllib3.connectionpool", "noisy", "noisy.child"):
            logging.getLogger(name).error("from %s", name)
        logging.getLogger("noisyneighbour").error("kept: only the exact name and its children are ignored")
        log.debug("kept")
    assert messages(tasks.get("job")) == ["kept: only the exact name and its children are ignored", "kept"]


def test_records_get_the_current_tasks_reference_and_id(tasks: TaskRecorder, log: logging.Logger) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s task=%(taskreport_task)s id=%(taskreport_task_id)s"))
    log.addHandler(handler)
    log.info("outside")
    task = taskreport.Task.create("job", status="processing")
    with taskreport.use_task(task):
        log.info("before the service answered")
        tasks.flush()
        log.info("after")
    lines = out.getvalue().splitlines()
    assert lines == ["outside task= id=", f"before the service answered task={task.ref} id=",
                     f"after task={task.ref} id={task.id}"]
    assert task.id


def test_the_format_fields_work_without_the_integration_and_with_reporting_off(
    log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s [%(taskreport_task)s]"))
    handler.addFilter(TaskFilter())
    log.addHandler(handler)
    with capture_tasks(integrations=[]):  # TaskFilter alone: no integration, no hook needed
        with taskreport.task("job") as task:
            log.info("in")
        log.info("out")
    assert out.getvalue().splitlines() == [f"in [{task.ref}]", "out []"]
    handler.removeFilter(handler.filters[0])
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.init(integrations=[LoggingIntegration()])  # the hook is installed; reporting is off
    with taskreport.task("off"):
        log.info("still formatted")
    assert out.getvalue().splitlines()[-1] == "still formatted []"


def test_a_logger_without_handlers_or_with_its_own_still_reaches_the_task(tasks: TaskRecorder) -> None:
    bare = logging.getLogger("bare.logger.with.no.handlers")
    bare.setLevel(logging.INFO)
    own = logging.getLogger("own.handler")
    own.setLevel(logging.INFO)
    own.propagate = False
    own.addHandler(logging.NullHandler())
    with taskreport.task("job"):
        bare.info("bare")
        own.info("own")
    assert messages(tasks.get("job")) == ["bare", "own"]


def test_threads_logging_on_one_task_lose_no_record(log: logging.Logger) -> None:
    with capture_tasks(integrations=[LoggingIntegration(tail=4000)]) as tasks:
        task = taskreport.Task.create("shared", status="processing")

        def work(n: int) -> None:
            with taskreport.use_task(task):
                for i in range(500):
                    log.info("thread %d record %d", n, i)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        task.success()
    kept = messages(tasks.get("shared"))
    assert len(kept) == 4000 and len(set(kept)) == 4000


def test_threads_logging_on_one_task_lose_no_record_while_the_sender_delivers(log: logging.Logger) -> None:
    # with a sender thread, records take no lock: hand-overs race with appends from eight threads
    taskreport.init(integrations=[LoggingIntegration(tail=4000)], flush_interval=0.02)
    task = taskreport.Task.create("shared", status="processing")
    seen_while_running: list[int] = []

    def work(n: int) -> None:
        with taskreport.use_task(task):
            for i in range(500):
                log.info("thread %d record %d", n, i)
                if i % 100 == 0:
                    time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # while the task still runs, every record reaches the service within a few flush intervals
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list(taskreport.list_tasks(name="shared"))
        seen_while_running.append(len(messages(found[0])) if found and found[0].data else 0)
        if seen_while_running[-1] == 4000:
            break
        time.sleep(0.05)
    assert seen_while_running[-1] == 4000, seen_while_running[-5:]
    task.success()
    assert taskreport.flush(10)
    kept = messages(next(iter(taskreport.list_tasks(name="shared"))))
    assert len(set(kept)) == 4000


def test_a_burst_of_records_is_handed_to_the_task_in_a_few_updates(log: logging.Logger) -> None:
    taskreport.init(integrations=[LoggingIntegration()], flush_interval=0.2)
    with taskreport.task("burst"):
        before = taskreport.stats()["merged"]
        for i in range(5000):
            log.info("record %d", i)
        merged = taskreport.stats()["merged"] - before
    assert taskreport.flush(10)
    record = next(iter(taskreport.list_tasks(name="burst")))
    assert messages(record)[-1] == "record 4999" and len(messages(record)) == 50
    assert merged < 100, merged  # one update per task each twentieth of a second at most, not 5000


def test_the_last_records_before_a_quiet_spell_reach_the_service_without_a_flush(log: logging.Logger) -> None:
    taskreport.init(integrations=[LoggingIntegration()], flush_interval=0.1)
    with taskreport.task("quiet"):
        for i in range(20):
            log.info("record %d", i)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = list(taskreport.list_tasks(name="quiet"))
            if found and found[0].data and messages(found[0])[-1:] == ["record 19"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the last record never reached the store while the task ran")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_logging_never_waits_on_delivery(silent_server: str, log: logging.Logger) -> None:
    taskreport.init(url=silent_server, token="t", integrations=[LoggingIntegration()], flush_interval=0.05,
                    request_timeout=30, spool=False)
    slowest = 0.0
    with taskreport.task("stuck"):
        for i in range(2000):
            start = time.perf_counter()
            log.info("record %d", i)
            slowest = max(slowest, time.perf_counter() - start)
            if i % 200 == 0:
                time.sleep(0.06)  # let the sender start a request that hangs
    assert slowest < 0.5, f"a logging call waited {slowest:.3f} s"
    taskreport.shutdown(timeout=0.1)


def test_invalid_options_name_the_option() -> None:
    for kwargs, attr in (({"level": "LOUD"}, "level"), ({"level": -1}, "level"), ({"tail": 0}, "tail"),
                         ({"tail": True}, "tail"), ({"error_level": "nope"}, "error_level"),
                         ({"max_message": 3}, "max_message"), ({"key": ""}, "key"), ({"error_key": 5}, "error_key")):
        with pytest.raises(ValidationError) as raised:
            LoggingIntegration(**kwargs)
        assert raised.value.attr == attr


def test_a_task_whose_data_is_not_an_object_keeps_no_tail(tasks: TaskRecorder, log: logging.Logger) -> None:
    with taskreport.task("listy", data=[1, 2]):
        log.info("nowhere to go")
    assert tasks.get("listy").data == [1, 2]


# -- structlog ---------------------------------------------------------------------------------------------
def test_structlog_events_land_on_the_task_and_name_it(tasks: TaskRecorder) -> None:
    structlog = pytest.importorskip("structlog")
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.add_log_level, structlog_processor,
                    structlog.processors.KeyValueRenderer(key_order=["event"])],
    )
    logger.info("outside")
    with taskreport.task("job") as task:
        logger.info("fetched", url="https://example.com", status=200)
        try:
            raise OSError("disk full")
        except OSError:
            logger.exception("write failed")
    record = tasks.get("job")
    assert messages(record) == ["fetched url='https://example.com' status=200", "write failed"]
    assert [r["level"] for r in record.data["logs"]] == ["INFO", "ERROR"]
    assert record.data["log_error"]["exception"] == "builtins.OSError"
    lines = out.getvalue().splitlines()
    assert "taskreport" not in lines[0]
    assert f"taskreport_task='{task.ref}'" in lines[1]


def test_structlog_through_the_standard_library_is_kept_once(tasks: TaskRecorder, log: logging.Logger) -> None:
    structlog = pytest.importorskip("structlog")
    log.addHandler(logging.NullHandler())
    logger = structlog.wrap_logger(
        log, processors=[structlog_processor, structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with taskreport.task("job") as task:
        logger.info("once", n=1)
    assert messages(tasks.get("job")) == [f"event='once' n=1 taskreport_task='{task.ref}'"]
