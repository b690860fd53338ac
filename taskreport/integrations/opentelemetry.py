"""Tasks in traces, and traces on tasks (OpenTelemetry, through its API only).

``taskreport.init(integrations=[OpenTelemetryIntegration()])`` and then, while a tracer provider is set
(``opentelemetry.trace.set_tracer_provider``, by the SDK or a distro; without one the integration does
nothing):

- a task that starts inside an active span carries the W3C trace id and span id in its data
  (``trace_id``, ``span_id``: 32 and 16 hex digits), and that span gets the task's reference, name and
  (once the service has answered) id as attributes (``taskreport.task.ref``, ``.name``, ``.id``; the first
  task started in a span names it) and an event ``taskreport.task.status`` for each status change of each
  task started in it, while the span is open;
- ``spans=True``: a span per task while it runs in this process (from the moment it is, or becomes,
  running until it ends), named after the task, a child of the span current when it started, ending with
  status OK (success), ERROR with the exception recorded (error), or unset (cancelled). Its ids are the ones
  in the task's data;
- Celery: the trace context goes from the publisher to the worker in the message's headers (W3C
  ``traceparent``), and the worker makes it current while the task runs, so spans and tasks made there
  belong to the publisher's trace. With ``opentelemetry-instrumentation-celery`` installed this is left to
  it (its publish and run spans are the ones that cross); the integration only fills in what it does not.

A task attached in this process (``Task.attach``: a Celery worker reporting on the task its publisher made)
is tied to the span current when its status first changes here, or, in a Celery worker, to the trace
context the message brought as soon as it is current; it gets a span of its own only inside a trace.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Status, StatusCode

from .. import _client, _hooks
from .._context import current_task
from .._errors import ValidationError
from .._integration import Integration
from .._pending import Entry
from .._status import RUNNING, TERMINAL
from .._task import DisabledTask, Task
from .._version import __version__
from . import require

__all__ = ["OpenTelemetryIntegration"]

#: the headers a W3C trace context travels in (the propagator may add others, such as baggage)
TRACEPARENT = "traceparent"
ATTR_REF = "taskreport.task.ref"
ATTR_ID = "taskreport.task.id"
ATTR_NAME = "taskreport.task.name"
ATTR_STATUS = "taskreport.task.status"
EVENT = "taskreport.task.status"


class OpenTelemetryIntegration(Integration):
    """Tie tasks to OpenTelemetry traces.

    - ``spans``: a span per task while it runs in this process (default False).
    - ``events``: an event on the span for each status change of a task started in it (default True).
    - ``celery``: carry the trace context from Celery publishers to workers (default True; does nothing
      where Celery is not used).
    - ``tracer_provider``: the provider to make spans with (default: the global one).
    """

    identifier = "opentelemetry"

    def __init__(self, *, spans: bool = False, events: bool = True, celery: bool = True,
                 tracer_provider: Any = None) -> None:
        for attr, value in (("spans", spans), ("events", events), ("celery", celery)):
            if not isinstance(value, bool):
                raise ValidationError(f"must be True or False, not {value!r}.", attr=attr)
        if tracer_provider is not None and not hasattr(tracer_provider, "get_tracer"):
            raise ValidationError(f"must be an OpenTelemetry TracerProvider, not {tracer_provider!r}.",
                                  attr="tracer_provider")
        self.spans = spans
        self.events = events
        self.celery = celery
        self.tracer_provider = tracer_provider
        self._tracer: Any = None
        self._tracer_of: Any = None

    def __repr__(self) -> str:
        return f"<OpenTelemetryIntegration spans={self.spans} events={self.events}>"

    @staticmethod
    def setup_once() -> None:
        require("opentelemetry.trace", "1.20", package="opentelemetry-api", integration="OpenTelemetry")
        _hooks.created.append(_created)
        _hooks.status_changed.append(_status_changed)
        import wrapt

        # Celery's signals are connected when Celery is imported, if ever: importing it here would cost
        # every process that never uses it a second
        wrapt.register_post_import_hook(_connect_celery, "celery")

    def tracer(self) -> Any:
        """The tracer to make spans with, or None while no tracer provider is set (the integration is then a
        no-op)."""
        provider = self.tracer_provider
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None
        if self._tracer_of is not provider:
            self._tracer = provider.get_tracer("taskreport", __version__)
            self._tracer_of = provider
        return self._tracer


def enabled() -> OpenTelemetryIntegration | None:
    """The current client's integration, when a tracer provider is set; else None."""
    client = _client.current_client()
    integration = None if client is None else client.integration(OpenTelemetryIntegration)
    if integration is None or integration.tracer() is None:
        return None
    return integration


# -- tasks and spans -----------------------------------------------------------------------------------
class _Link:
    """The span a task of this process is tied to."""

    __slots__ = ("named", "own", "span")

    def __init__(self, span: Any, own: bool, named: bool) -> None:
        self.span = span
        #: a span made for the task (ended with it), rather than the span it started in
        self.own = own
        #: the span names this task (its attributes are this task's)
        self.named = named


_lock = threading.Lock()
_links: weakref.WeakKeyDictionary[Entry, _Link] = weakref.WeakKeyDictionary()
#: spans that already name a task: the first task started in a span names it
_named: weakref.WeakSet[Any] = weakref.WeakSet()


def _ids(span: Any) -> dict[str, str]:
    context = span.get_span_context()
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}


def _tie(integration: OpenTelemetryIntegration, task: Task, status: str) -> tuple[_Link, dict[str, str]] | None:
    """Tie ``task`` to a span: its own (``spans=True`` and it runs) or the current one. None if neither."""
    current = trace.get_current_span()
    valid = current.get_span_context().is_valid
    # a task attached from elsewhere belongs to its creator's trace: it gets a span here only inside one
    if integration.spans and status in RUNNING and (valid or task.entry.pid is not None):
        span = integration.tracer().start_span(task.name or "task", kind=trace.SpanKind.INTERNAL,
                                               attributes={ATTR_REF: task.ref, ATTR_NAME: task.name})
        link = _Link(span, own=True, named=True)
    else:
        if not valid:
            return None
        named = False
        if current.is_recording():
            with _lock:
                try:
                    named = current not in _named
                    if named:
                        _named.add(current)
                except TypeError:  # a span type that can't be weakly referenced: every task names it
                    named = True
            if named:
                current.set_attributes({ATTR_REF: task.ref, ATTR_NAME: task.name})
        link = _Link(current, own=False, named=named)
    with _lock:
        _links[task.entry] = link
    return link, _ids(link.span)


def _event(link: _Link, task: Task, status: str) -> None:
    link.span.add_event(EVENT, {ATTR_REF: task.ref, ATTR_NAME: task.name, ATTR_STATUS: status})


def _created(task: Task, fields: dict[str, Any]) -> None:
    """Observer: this process created ``task``; ``fields`` is what it is born with."""
    integration = enabled()
    if integration is None:
        return
    status = str(fields.get("status") or "pending")
    tied = _tie(integration, task, status)
    if tied is None:
        return
    link, ids = tied
    data = fields.get("data")
    if data is None:
        fields["data"] = ids
    elif isinstance(data, Mapping):
        fields["data"] = {**ids, **data}  # a copy: the caller's dict is theirs; their keys win
    if integration.events and link.span.is_recording():
        _event(link, task, status)


def _link_for(integration: OpenTelemetryIntegration, task: Task, status: str) -> _Link | None:
    """The span ``task`` is tied to, tying it now if its status change calls for it (see the module's doc)."""
    entry = task.entry
    with _lock:
        link = _links.get(entry)
    if link is None or (integration.spans and not link.own and status in RUNNING):
        if link is None and entry.pid is not None and status not in RUNNING:
            return None  # made here while no span was current (or before the integration): nothing to tie to
        tied = _tie(integration, task, status)
        if tied is None:
            return link
        link, ids = tied
        data = task.data
        if data is None or (isinstance(data, Mapping) and (link.own or "trace_id" not in data)):
            # an attached task (a Celery worker's) learns its trace here; a task that starts running gets
            # the ids of its own span
            task.update(data=ids)
    return link


def _status_changed(task: Task, status: str, fields: Mapping[str, Any]) -> None:
    """Observer: ``task``'s status moved to ``status`` here."""
    integration = enabled()
    if integration is None:
        return
    link = _link_for(integration, task, status)
    if link is None:
        return
    span = link.span
    entry = task.entry
    if not span.is_recording():
        if status in TERMINAL:
            with _lock:
                _links.pop(entry, None)
        return
    if link.named and entry.id is not None:
        span.set_attribute(ATTR_ID, entry.id)
    if integration.events:
        _event(link, task, status)
    if status in TERMINAL:
        with _lock:
            _links.pop(entry, None)
        if link.own:
            _end(span, status, fields)


def _adopt_current(integration: OpenTelemetryIntegration) -> None:
    """Tie the current task to the span now current, if its status changed before that span was (a Celery
    integration that made the worker's task current before the trace context was)."""
    task = current_task()
    if task is None or type(task) is DisabledTask:
        return
    with _lock:
        if task.entry in _links:
            return
    status = task.status.value
    link = _link_for(integration, task, status)
    if link is not None and integration.events and link.span.is_recording():
        _event(link, task, status)


def _end(span: Any, status: str, fields: Mapping[str, Any]) -> None:
    if status == "success":
        span.set_status(Status(StatusCode.OK))
    elif status == "error":
        data = fields.get("data")
        data = data if isinstance(data, Mapping) else {}
        message = str(data.get("message") or data.get("error") or "")
        if data.get("exception"):
            span.add_event("exception", {
                "exception.type": str(data["exception"]),
                "exception.message": message,
                "exception.stacktrace": str(data.get("traceback") or ""),
                "exception.escaped": True,
            })
        span.set_status(Status(StatusCode.ERROR, message[:1000] or None))
    else:
        span.set_attribute(ATTR_STATUS, status)
    span.end()


# -- Celery: the trace context travels with the message -------------------------------------------------
class _RequestGetter(Getter[Any]):
    """Reads a propagated header from a Celery task request (custom headers become its attributes)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        if value is None and isinstance(carrier, Mapping):
            value = carrier.get(key)
        if value is None:
            return None
        return [value] if isinstance(value, str) else [str(v) for v in value]

    def keys(self, carrier: Any) -> list[str]:
        return []


_getter = _RequestGetter()
#: the contexts made current for Celery tasks running now, by task id
_tokens: dict[str, Any] = {}


def _celery_instrumented() -> bool:
    """Whether opentelemetry-instrumentation-celery is active here (then it carries the context)."""
    module = sys.modules.get("opentelemetry.instrumentation.celery")
    if module is None:
        return False
    try:
        return bool(module.CeleryInstrumentor().is_instrumented_by_opentelemetry)
    except Exception:
        return False


def _celery_enabled() -> bool:
    integration = enabled()
    return integration is not None and integration.celery


def before_task_publish(headers: Any = None, **_: Any) -> None:
    """Celery signal: put the current trace context in the message's headers, unless something did."""
    if not isinstance(headers, dict) or TRACEPARENT in headers or not _celery_enabled():
        return
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


def task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Celery signal, in the worker: make the publisher's trace context current while the task runs."""
    integration = enabled()
    if task_id is None or task is None or integration is None or not integration.celery:
        return
    # something made a span current already (Celery's OpenTelemetry instrumentation): it knows better
    if not _celery_instrumented() and not trace.get_current_span().get_span_context().is_valid:
        request = getattr(task, "request", None)
        carried = propagate.extract(request, getter=_getter) if request is not None else None
        if carried is not None and trace.get_current_span(carried).get_span_context().is_valid:
            _tokens[task_id] = otel_context.attach(carried)
    _adopt_current(integration)


def task_postrun(task_id: str | None = None, **_: Any) -> None:
    """Celery signal, in the worker: the task is over; its trace context is no longer current."""
    token = _tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        with contextlib.suppress(ValueError):  # detached in another context: not ours to change
            otel_context.detach(token)


def _connect_celery(module: Any = None) -> None:
    from celery import signals

    signals.before_task_publish.connect(before_task_publish, weak=False)
    signals.task_prerun.connect(task_prerun, weak=False)
    signals.task_postrun.connect(task_postrun, weak=False)
