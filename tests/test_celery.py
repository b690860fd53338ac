"""The Celery integration in one process: options, which tasks are tracked, arguments, eager mode, what a
publication records and carries, and how setup and the hooks behave. Real workers are in
``integrations/test_celery_*.py``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from celery import Celery, signals

import taskreport
from taskreport import ValidationError
from taskreport._local import LocalTransport
from taskreport.integrations import DidNotEnable, require
from taskreport.integrations.celery import HEADER, CeleryIntegration, TrackedTask, ref_for


def make_app(eager: bool = True) -> Celery:
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=True)
    app.conf.task_always_eager = eager
    app.conf.task_eager_propagates = False
    task = app.task

    @task(name="u.add", shared=False)
    def add(x: int, y: int) -> int:
        taskreport.current_task().update(value=x + y)  # type: ignore[union-attr]
        return x + y

    @task(name="u.fail", shared=False)
    def fail() -> None:
        raise ValueError("nope")

    @task(name="u.flaky", bind=True, max_retries=2, shared=False)
    def flaky(self: Any, failures: int) -> int:
        if self.request.retries < failures:
            raise self.retry(exc=KeyError(f"attempt {self.request.retries}"), countdown=0)
        return int(self.request.retries)

    @task(name="u.spawn", shared=False)
    def spawn() -> None:
        add.delay(1, 1)
        with taskreport.task("u.block"):
            add.delay(2, 2)

    @task(name="u.secret", shared=False)
    def secret(user: str, password: str, blob: str = "") -> None:
        pass

    @task(name="u.off", taskreport=False, shared=False)
    def off() -> None:
        pass

    @task(name="u.mine", taskreport={"tags": {"team": "ab"}, "value_max": 3, "heartbeat": 10}, shared=False)
    def mine() -> None:
        pass

    @task(name="u.bad", taskreport={"value_max": -1, "colour": "red"}, shared=False)
    def bad() -> None:
        pass

    @task(name="u.based", base=TrackedTask, shared=False)
    def based() -> None:
        pass

    @task(name="other.thing", shared=False)
    def other() -> None:
        pass

    return app


def one(celery_id: str) -> taskreport.TaskRecord:
    assert taskreport.flush(5)
    (record,) = taskreport.list_tasks(external_id=celery_id)
    return record


def init(**options: Any) -> taskreport.Client:
    return taskreport.init(integrations=[CeleryIntegration(**options)], flush_interval=0.05)


# -- setup ---------------------------------------------------------------------------------------------
def test_require_names_the_framework_and_the_version_it_needs() -> None:
    with pytest.raises(DidNotEnable, match=r"Celery integration needs celery >= 99\.0; 5\.\d+\.\d+ is installed"):
        require("celery", "99.0", integration="Celery")


@pytest.mark.parametrize(
    ("options", "attr"),
    [
        ({"auto_track": "yes"}, "auto_track"),
        ({"includes": [3]}, "includes"),
        ({"record_args": 1}, "record_args"),
        ({"max_args_size": 2}, "max_args_size"),
        ({"redact_args": "no"}, "redact_args"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"heartbeat": True}, "heartbeat"),
        ({"stock_id_timeout": 0}, "stock_id_timeout"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], attr: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CeleryIntegration(**options)
    assert caught.value.attr == attr


def test_setup_connects_each_handler_once_however_often_init_runs() -> None:
    for _ in range(3):
        init(auto_track=True)
    ours = [r for r in signals.before_task_publish.receivers if "taskreport" in repr(r[0])]
    assert len(ours) == 1


def test_hooks_do_nothing_without_the_integration_or_while_reporting_is_off() -> None:
    app = make_app()
    taskreport.init(flush_interval=0.05)
    app.tasks["u.add"].delay(1, 2)
    assert taskreport.flush(5) and list(taskreport.list_tasks()) == []
    init(auto_track=True)
    taskreport.init(integrations=[CeleryIntegration(auto_track=True)], disabled=True)
    assert app.tasks["u.add"].delay(1, 2).get() == 3
    init(auto_track=True)
    assert list(taskreport.list_tasks()) == []


def test_ref_for_is_the_same_everywhere_and_always_a_reference() -> None:
    assert ref_for("5d1c6f1e-0b4e-4a57-9a1c-3f3c1e0d7b11") == "celery-5d1c6f1e-0b4e-4a57-9a1c-3f3c1e0d7b11"
    odd = ref_for("my id / with spaces")
    assert odd == ref_for("my id / with spaces") and odd.startswith("celery-") and len(odd) <= 64
    assert ref_for("x" * 100) != ref_for("x" * 99)


# -- which tasks, with what --------------------------------------------------------------------------------
def test_auto_track_with_includes_and_excludes() -> None:
    integration = CeleryIntegration(auto_track=True, includes=["u.*"], excludes=["u.secret"])
    assert integration.options_for("u.add") is not None
    assert integration.options_for("u.secret") is None
    assert integration.options_for("other.thing") is None
    assert integration.options_for("celery.chord_unlock") is None
    assert CeleryIntegration().options_for("u.add") is None  # not tracked unless asked


def test_tasks_opt_in_and_out_and_bring_their_own_fields(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    init(auto_track=False)
    ids = {name: app.tasks[name].delay().id for name in ("u.off", "u.mine", "u.based", "u.bad", "other.thing")}
    assert taskreport.flush(5)
    tracked = {t.external_id: t for t in taskreport.list_tasks()}
    assert set(tracked) == {ids["u.mine"], ids["u.based"], ids["u.bad"]}
    mine = tracked[ids["u.mine"]]
    assert (mine.tags, mine.value_max, mine.stale_timeout) == ({"team": "ab"}, 3, 20)
    assert tracked[ids["u.bad"]].value_max == 100
    assert "task u.bad: ignoring its taskreport options" in caplog.text


def test_arguments_are_recorded_bounded_and_redacted() -> None:
    app = make_app()

    def redact(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "u.secret":
            return args[:1], {k: "***" if k == "password" else v for k, v in kwargs.items()}
        return args, kwargs

    init(auto_track=True, record_args=True, max_args_size=200, redact_args=redact)
    small = app.tasks["u.secret"].delay("ann", password="hunter2").id
    big = app.tasks["u.secret"].delay("bob", password="x", blob="z" * 1000).id
    assert one(small).data == {"args": ["ann"], "kwargs": {"password": "***"}}
    data = one(big).data
    assert isinstance(data["kwargs"], str) and data["kwargs"].endswith("…") and len(data["kwargs"]) <= 100
    assert json.dumps(data).count("z") < 100


def test_a_redactor_that_raises_records_no_arguments_and_the_task_runs(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    def broken(name: str, args: Any, kwargs: Any) -> Any:
        raise RuntimeError("redactor bug")

    init(auto_track=True, record_args=True, redact_args=broken)
    result = app.tasks["u.add"].delay(1, 2)
    assert result.get() == 3
    record = one(result.id)
    assert record.status.value == "success" and "args" not in (record.data or {})
    assert "redact_args raised RuntimeError: redactor bug" in caplog.text


# -- eager mode ---------------------------------------------------------------------------------------------
def test_eager_tasks_report_the_same_way() -> None:
    app = make_app()
    init(auto_track=True)
    with taskreport.task("job") as job:
        ok = app.tasks["u.add"].delay(2, 3)
    failed = app.tasks["u.fail"].delay()
    retried = app.tasks["u.flaky"].delay(1)
    exhausted = app.tasks["u.flaky"].delay(5)
    record = one(ok.id)
    assert (record.status.value, record.value, record.parent, record.name) == ("success", 5, job.id, "u.add")
    assert record.ref == ref_for(ok.id) and record.time_to_start == 0
    record = one(failed.id)
    assert record.status.value == "error" and record.data["exception"] == "builtins.ValueError"
    record = one(retried.id)
    assert (record.status.value, record.data["retries"]) == ("success", 1)
    record = one(exhausted.id)
    assert (record.status.value, record.data["retries"], record.data["why"]) == (
        "error", 2, "retries exhausted (2 of 2)")


def test_eager_children_nest_under_the_task_that_made_them() -> None:
    app = make_app()
    init(auto_track=True)
    spawn = app.tasks["u.spawn"].delay()
    parent = one(spawn.id)
    children = {t.name: t for t in taskreport.list_tasks(parent=parent.id)}
    assert set(children) == {"u.add", "u.block"}
    # a task published inside a block of the task's own is that block's child, or its sibling: one level
    adds = [t for t in taskreport.list_tasks(name="u.add")]
    assert len(adds) == 2 and all(t.parent == parent.id for t in adds)


# -- publishing ---------------------------------------------------------------------------------------------
@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """The headers of every message published while the test runs."""
    seen: list[dict[str, Any]] = []

    def keep(headers: Any = None, **_: Any) -> None:
        seen.append(dict(headers or {}))

    signals.after_task_publish.connect(keep, weak=False)
    yield seen
    signals.after_task_publish.disconnect(keep)


def test_publish_makes_a_pending_record_and_carries_it_in_the_headers(published: list[dict[str, Any]]) -> None:
    app = make_app(eager=False)
    init(auto_track=True, record_args=True, heartbeat=5)
    with taskreport.task("web") as web:
        result = app.tasks["u.add"].apply_async((1, 2), queue="fast")
    header = published[-1][HEADER]
    assert header["made"] is True and header["refs"] is True and header["parent"] == web.ref
    assert isinstance(header["sent"], float)
    record = one(result.id)
    assert (record.status.value, record.name, record.queue, record.parent, record.ref) == (
        "pending", "u.add", "fast", web.id, ref_for(result.id))
    assert record.data == {"args": [1, 2], "kwargs": {}} and record.stale_timeout == 10
    app.tasks["u.off"].delay()
    assert HEADER not in published[-1]


class _Service(BaseHTTPRequestHandler):
    """Answers every GET with an empty page; ours says it knows references."""

    features = ""

    def do_GET(self) -> None:
        body = json.dumps({"results": [], "next": None, "previous": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.features:
            self.send_header("X-Taskreport-Features", self.features)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("features", "learned"), [("batch, refs", True), ("", None)])
def test_the_http_transport_learns_references_from_any_answer(features: str, learned: bool | None) -> None:
    handler = type("Handler", (_Service,), {"features": features})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = taskreport.init(f"http://127.0.0.1:{server.server_address[1]}", "t", allow_insecure_http=True)
        assert client.transport.refs is None
        list(taskreport.list_tasks())
        assert client.transport.refs is learned
    finally:
        server.shutdown()
        server.server_close()


def test_without_references_publishing_leaves_the_record_to_the_worker(
    published: list[dict[str, Any]], isolated: Any
) -> None:
    app = make_app(eager=False)
    transport = LocalTransport(str(isolated / "store.db"), "local", "default")
    transport.refs = None  # as an HTTP client before the service has answered, or a stock server
    taskreport.init(transport=transport, integrations=[CeleryIntegration(auto_track=True)], flush_interval=0.05)
    with taskreport.task("web") as web:
        web.wait_id(5)
        result = app.tasks["u.add"].delay(1, 2)
    header = published[-1][HEADER]
    assert "made" not in header and header["parent"] == web.ref and header["parent_id"] == web.id
    assert taskreport.flush(5)
    assert list(taskreport.list_tasks(external_id=result.id)) == []


def test_create_takes_a_reference_of_the_callers_choosing() -> None:
    taskreport.init()
    task = taskreport.Task.create("chosen", ref="celery-abcdefghijklmnop")
    assert task.ref == "celery-abcdefghijklmnop"
    with pytest.raises(ValidationError) as caught:
        taskreport.Task.create("bad", ref="no spaces allowed here")
    assert caught.value.attr == "ref"


def test_the_integration_logs_under_the_library_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="taskreport")
    CeleryIntegration(auto_track=True)._decide("u.x", type("T", (), {"taskreport": 3})())
    assert "taskreport= must be True, False or a dict" in caplog.text
