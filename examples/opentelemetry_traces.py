"""Tasks in traces: a task started inside a span carries the trace id, and has a span of its own.

Needs the OpenTelemetry SDK (``pip install opentelemetry-sdk``; the ``dev`` extra has it). Spans are printed
as they end instead of being sent to a collector.

Run: ``python examples/opentelemetry_traces.py``, then ``taskreport list``.
"""

from __future__ import annotations

import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import taskreport
from taskreport.integrations.opentelemetry import OpenTelemetryIntegration


def one_line(span: ReadableSpan) -> str:
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    events = ", ".join(str((e.attributes or {}).get("taskreport.task.status")) for e in span.events
                       if e.name == "taskreport.task.status")
    return (f"span {span.name:<14} trace={span.context.trace_id:032x} id={span.context.span_id:016x} "
            f"parent={parent} status={span.status.status_code.name} events=[{events}]\n")


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=one_line)))
trace.set_tracer_provider(provider)
taskreport.init(integrations=[OpenTelemetryIntegration(spans=True)])
tracer = trace.get_tracer("example")


@taskreport.track(name="resize-images")
def resize(paths: list[str]) -> None:
    for path in paths:
        if not path.endswith(".png"):
            raise ValueError(f"not an image: {path}")


def main() -> None:
    with tracer.start_as_current_span("handle-request") as request:
        resize(["a.png", "b.png"])
        try:
            resize(["notes.txt"])
        except ValueError as exc:
            print(f"refused as expected: {exc}")
    taskreport.flush()
    print(f"request trace: {request.get_span_context().trace_id:032x}")
    for task in taskreport.list_tasks(name="resize-images"):
        print(f"task {task.id} {task.status.value:<7} trace_id={task.data['trace_id']} "
              f"span_id={task.data['span_id']}")


if __name__ == "__main__":
    main()
