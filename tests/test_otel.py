"""The OpenTelemetry integration, with the SDK's in-memory exporter: trace ids on tasks, task attributes and
status events on spans, a span per task, attached tasks, and nothing at all without a tracer provider."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import taskreport
from taskreport import ValidationError
from taskreport.integrations.opentelemetry import OpenTelemetryIntegration
from taskreport.testing import TaskRecorder, capture_tasks

_exporter = InMemorySpanExporter()


def _provider() -> TracerProvider:
    """This process's tracer provider (set once: OpenTelemetry allows one), exporting to memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_taskreport_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        provider._taskreport_test_exporter = True  # type: ignore[attr-defined]
    return provider


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _provider()
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> trace.Tracer:
    return trace.get_tracer("tests")


@pytest.fixture
def tasks(spans: InMemorySpanExporter) -> Iterator[TaskRecorder]:
    with capture_tasks(integrations=[OpenTelemetryIntegration()]) as recorder:
        yield recorder


def hex_ids(span: Any) -> dict[str, str]:
    context = span.get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def events(span: ReadableSpan) -> list[tuple[str, str]]:
    return [(str(e.attributes["taskreport.task.name"]), str(e.attributes["taskreport.task.status"]))
            for e in span.events if e.name == "taskreport.task.status" and e.attributes]


def test_a_task_started_in_a_span_carries_its_ids_and_the_span_names_the_task(
    tasks: TaskRecorder, tracer: trace.Tracer, spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("request") as request, taskreport.task("job") as job:
        ids = hex_ids(request)
    record = tasks.get("job")
    assert record.data == ids
    span = finished(spans, "request")
    assert span.attributes is not None
    assert (span.attributes["taskreport.task.ref"], span.attributes["taskreport.task.name"]) == (job.ref, "job")
    assert events(span) == [("job", "processing"), ("job", "success")]
    assert [e.attributes["taskreport.task.ref"] for e in span.events if e.attributes] == [job.ref, job.ref]


def test_the_span_gets_the_task_id_once_the_service_has_answered(spans: InMemorySpanExporter,
                                                                  tracer: trace.Tracer) -> None:
    taskreport.init(integrations=[OpenTelemetryIntegration()])  # the embedded store, with its sender thread
    with tracer.start_as_current_span("request"):
        task = taskreport.Task.create("job", status="processing")
        task_id = task.wait_id(10)
        task.update(value=50)
        task.success()
    assert task_id
    span = finished(spans, "request")
    assert span.attributes is not None and span.attributes["taskreport.task.id"] == task_id
    assert taskreport.flush(10)
    stored = taskreport.get_task(task_id)
    assert stored.data == {"trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}"}


def test_the_first_task_started_in_a_span_names_it_and_every_task_adds_its_events(
    tasks: TaskRecorder, tracer: trace.Tracer, spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("batch"):
        first = taskreport.Task.create("first", status="processing")
        second = taskreport.Task.create("second")
        second.error()
        first.success()
    span = finished(spans, "batch")
    assert span.attributes is not None and span.attributes["taskreport.task.ref"] == first.ref
    assert events(span) == [("first", "processing"), ("second", "pending"), ("second", "error"),
                            ("first", "success")]
    assert tasks.get("first").data["trace_id"] == tasks.get("second").data["trace_id"]


def test_no_active_span_means_no_ids_and_no_spans(tasks: TaskRecorder, spans: InMemorySpanExporter) -> None:
    with taskreport.task("job", data={"k": 1}):
        pass
    assert tasks.get("job").data == {"k": 1}
    assert spans.get_finished_spans() == ()


def test_the_callers_data_is_left_alone_and_their_keys_win(tasks: TaskRecorder, tracer: trace.Tracer) -> None:
    given = {"trace_id": "mine", "rows": 3}
    with tracer.start_as_current_span("request") as request, taskreport.task("job", data=given):
        pass
    assert given == {"trace_id": "mine", "rows": 3}
    assert tasks.get("job").data == {"trace_id": "mine", "span_id": hex_ids(request)["span_id"], "rows": 3}
    with tracer.start_as_current_span("request"), taskreport.task("listy", data=[1]):
        pass
    assert tasks.get("listy").data == [1]


def test_a_span_per_task_with_status_and_exceptions(spans: InMemorySpanExporter, tracer: trace.Tracer) -> None:
    integration = OpenTelemetryIntegration(spans=True)
    with capture_tasks(integrations=[integration]) as tasks, tracer.start_as_current_span("request") as request:
        with taskreport.task("fine"):
            pass
        with pytest.raises(KeyError), taskreport.task("broken"):
            raise KeyError("nope")
        with taskreport.task("stopped") as stopped:
            stopped.cancel()
    parent = request.get_span_context().span_id
    fine, broken, stopped_span = (finished(spans, name) for name in ("fine", "broken", "stopped"))
    for span in (fine, broken, stopped_span):
        assert span.parent is not None and span.parent.span_id == parent
        assert span.kind == trace.SpanKind.INTERNAL
    assert fine.status.status_code == StatusCode.OK
    assert broken.status.status_code == StatusCode.ERROR and broken.status.description == "'nope'"
    [exception] = [e for e in broken.events if e.name == "exception"]
    assert exception.attributes is not None
    assert exception.attributes["exception.type"] == "builtins.KeyError"
    assert "Traceback" in str(exception.attributes["exception.stacktrace"])
    assert stopped_span.status.status_code == StatusCode.UNSET
    assert stopped_span.attributes is not None and stopped_span.attributes["taskreport.task.status"] == "cancelled"
    assert events(fine) == [("fine", "processing"), ("fine", "success")]
    # the task's data names its own span
    assert tasks.get("fine").data == {"trace_id": f"{fine.context.trace_id:032x}",
                                      "span_id": f"{fine.context.span_id:016x}"}
    assert finished(spans, "request").attributes == {}


def test_a_span_per_task_starts_a_trace_of_its_own_when_none_is_active(spans: InMemorySpanExporter) -> None:
    integration = OpenTelemetryIntegration(spans=True)
    with capture_tasks(integrations=[integration]) as tasks, taskreport.task("outer"), taskreport.task("inner"):
        pass
    outer, inner = finished(spans, "outer"), finished(spans, "inner")
    assert outer.parent is None and inner.parent is None  # the task's span is not made current (see docs)
    assert tasks.get("outer").data["trace_id"] == f"{outer.context.trace_id:032x}"


def test_a_span_per_task_covers_the_time_it_runs_here(spans: InMemorySpanExporter, tracer: trace.Tracer) -> None:
    with capture_tasks(integrations=[OpenTelemetryIntegration(spans=True)]) as tasks:
        with tracer.start_as_current_span("publish"):
            queued = taskreport.Task.create("queued")  # pending: it runs elsewhere, if ever
            later = taskreport.Task.create("later")
        assert [s.name for s in spans.get_finished_spans()] == ["publish"]
        with tracer.start_as_current_span("consume") as consume:
            later.processing()
            later.success()
        assert queued.status == "pending"
    span = finished(spans, "later")
    assert span.parent is not None and span.parent.span_id == consume.get_span_context().span_id
    assert events(span) == [("later", "processing"), ("later", "success")]
    assert tasks.get("later").data["span_id"] == f"{span.context.span_id:016x}"
    assert "queued" not in [s.name for s in spans.get_finished_spans()]


def test_an_attached_task_is_tied_to_the_span_current_when_it_first_changes_here(
    tasks: TaskRecorder, tracer: trace.Tracer, spans: InMemorySpanExporter
) -> None:
    made = taskreport.Task.create("made elsewhere")  # no span: as a publisher without tracing
    attached = taskreport.Task.attach(made.ref)
    with tracer.start_as_current_span("worker run") as run:
        attached.processing()
        attached.success()
    assert tasks.get("made elsewhere").data == hex_ids(run)
    span = finished(spans, "worker run")
    assert span.attributes is not None and span.attributes["taskreport.task.ref"] == made.ref
    assert events(span) == [("", "processing"), ("", "success")]


def test_nothing_happens_for_a_client_made_without_the_integration(spans: InMemorySpanExporter,
                                                                     tracer: trace.Tracer) -> None:
    with capture_tasks(integrations=[]) as tasks, tracer.start_as_current_span("request"), taskreport.task("job"):
        pass
    assert tasks.get("job").data is None
    assert finished(spans, "request").events == ()


def test_a_tracer_provider_given_to_the_integration_is_used(spans: InMemorySpanExporter) -> None:
    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    integration = OpenTelemetryIntegration(spans=True, tracer_provider=provider)
    with capture_tasks(integrations=[integration]), taskreport.task("job"):
        pass
    assert [s.name for s in own.get_finished_spans()] == ["job"]
    assert spans.get_finished_spans() == ()


def test_invalid_options_name_the_option() -> None:
    for kwargs, attr in (({"spans": "yes"}, "spans"), ({"events": 1}, "events"), ({"celery": None}, "celery"),
                         ({"tracer_provider": object()}, "tracer_provider")):
        with pytest.raises(ValidationError) as raised:
            OpenTelemetryIntegration(**kwargs)
        assert raised.value.attr == attr


def test_without_a_tracer_provider_the_integration_does_nothing() -> None:
    script = textwrap.dedent("""
        import taskreport
        from opentelemetry import trace
        from taskreport.integrations.opentelemetry import OpenTelemetryIntegration
        from taskreport.testing import capture_tasks

        with capture_tasks(integrations=[OpenTelemetryIntegration(spans=True)]) as tasks:
            with trace.get_tracer("t").start_as_current_span("request"):
                with taskreport.task("job", data={"k": 1}):
                    pass
        print(tasks.get("job").data)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'k': 1}"
    assert done.stderr == ""
