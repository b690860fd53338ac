"""Celery: one taskreport task per Celery task, from its publication to its end.

``taskreport.init(integrations=[CeleryIntegration(...)])`` in the module that both the publishers and the
workers import. Which Celery tasks are tracked: every one with ``auto_track=True`` (narrowed by ``includes``
and ``excludes``), and, per task, ``@app.task(taskreport=True)``, ``@app.task(taskreport={...fields})`` or a
task whose base is :class:`TrackedTask`.

How a task is followed (the details and what each Celery state maps to are in ``docs/celery.md``):

- Every Celery task id has one reference, derived from the id alone (:func:`ref_for`), so that the publisher,
  the worker's pool children and the worker's main process all name the same record without talking to
  each other.
- **Publish** (``before_task_publish``): when the service knows task references, the record is created now,
  ``pending`` (no I/O: the flusher sends it). A header ``taskreport`` carries the publish time, the parent and
  whether the record was made. Against a service without references (a stock server of the API) nothing is
  created at publish: the worker creates the record when the task starts, so nothing is made twice.
- **Worker** (``task_prerun`` ... ``task_postrun``, in the pool child): the task is attached to (or created)
  and is the current task while it runs; its end is reported as success, error or a retry (pending again).
- **Worker's main process** (``task_received``, ``task_revoked``, ``task_failure`` of hard time limits and lost
  children): revocations, expiries, hard time limits and lost children end the record there.

Every hook does nothing unless the current client was made with this integration, and no exception of
the integration ever reaches Celery or the task: each is reported once (``taskreport._internal``).
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import _internal
from .._context import current_task, use_task
from .._errors import ValidationError
from .._ratelog import RateLimitedLog
from .._refs import REF_PATTERN
from .._task import DisabledTask, Task, exception_data
from .._validation import validate_task
from . import DidNotEnable, Integration, require

celery = require("celery", "5.3", integration="Celery")

from celery import signals  # noqa: E402  (after the version check)

__all__ = ["CeleryIntegration", "DidNotEnable", "TrackedTask", "ref_for"]

logger = logging.getLogger("taskreport")
_log = RateLimitedLog()

#: the message header that carries what the worker needs to know of the record
HEADER = "taskreport"
#: Celery's own tasks (chord_unlock, backend_cleanup, ...) are never tracked automatically
DEFAULT_EXCLUDES = ("celery.*",)
#: fields a task's own ``taskreport={...}`` may set, besides ``heartbeat`` and ``record_args``
TASK_FIELDS = ("name", "value_max", "data", "tags", "max_runtime", "stale_timeout", "value")
Redactor = Callable[[str, tuple[Any, ...], dict[str, Any]], "tuple[Iterable[Any], Mapping[str, Any]] | None"]


def ref_for(celery_id: str) -> str:
    """The task reference of a Celery task id: the same in every process, derived from the id alone."""
    ref = f"celery-{celery_id}"
    if REF_PATTERN.fullmatch(ref):
        return ref
    return "celery-" + hashlib.sha256(celery_id.encode("utf-8", "surrogatepass")).hexdigest()[:48]


# -- options ---------------------------------------------------------------------------------------------
def _patterns(value: Any, attr: str) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    if isinstance(value, (str, re.Pattern)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, re.Pattern):
            out.append(item)
        elif isinstance(item, str):
            out.append(re.compile(fnmatch.translate(item)))
        else:
            raise ValidationError(f"must be task name patterns (strings or compiled regexes), not {item!r}.",
                                  attr=attr)
    return tuple(out)


def _seconds(value: Any, attr: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 2**30:
        raise ValidationError(f"must be a positive number of seconds, not {value!r}.", attr=attr)
    return float(value)


class CeleryIntegration(Integration):
    """Report Celery tasks.

    - ``auto_track``: track every task (except Celery's own ``celery.*`` ones), narrowed by ``includes`` and
      ``excludes``: task name patterns, shell-style strings (``"billing.*"``) or compiled regexes. Tasks
      that opt in with ``@app.task(taskreport=True)`` (or ``taskreport={...}``, or the :class:`TrackedTask`
      base) are tracked whatever the patterns say; ``taskreport=False`` opts a task out.
    - ``record_args``: put the task's arguments in its data (``args``, ``kwargs``), as JSON, at most
      ``max_args_size`` characters in all (longer ones are cut and kept as text). ``redact_args(name, args,
      kwargs)`` may return the ``(args, kwargs)`` to record instead, or None to record none.
    - ``heartbeat``: seconds between touches while a task runs; the task's ``stale_timeout`` becomes twice
      that, so the service marks a task whose worker died ``stale``.
    - ``stock_id_timeout``: against a service without task references (or while that is not known yet), a
      task is found by its id only; a retry waits at most this long for the id of its own task, and a
      publication from inside a task for the id of its parent, if that id is not known yet (5 s by default).
    """

    identifier = "celery"

    def __init__(
        self,
        *,
        auto_track: bool = False,
        includes: Iterable[str | re.Pattern[str]] | str | None = None,
        excludes: Iterable[str | re.Pattern[str]] | str | None = None,
        record_args: bool = False,
        max_args_size: int = 1024,
        redact_args: Redactor | None = None,
        heartbeat: float | None = None,
        stock_id_timeout: float = 5.0,
    ) -> None:
        if not isinstance(auto_track, bool):
            raise ValidationError(f"must be True or False, not {auto_track!r}.", attr="auto_track")
        if not isinstance(record_args, bool):
            raise ValidationError(f"must be True or False, not {record_args!r}.", attr="record_args")
        if isinstance(max_args_size, bool) or not isinstance(max_args_size, int) or max_args_size < 16:
            raise ValidationError(f"must be a number of characters (16 or more), not {max_args_size!r}.",
                                  attr="max_args_size")
        if redact_args is not None and not callable(redact_args):
            raise ValidationError("must be a function (name, args, kwargs) -> (args, kwargs) or None.",
                                  attr="redact_args")
        self.auto_track = auto_track
        self.includes = _patterns(includes, "includes")
        self.excludes = _patterns(DEFAULT_EXCLUDES, "excludes") + _patterns(excludes, "excludes")
        self.record_args = record_args
        self.max_args_size = max_args_size
        self.redact_args = redact_args
        self.heartbeat = _seconds(heartbeat, "heartbeat")
        self.stock_id_timeout = _seconds(stock_id_timeout, "stock_id_timeout") or 5.0
        #: per task name: the task's own options (None: not tracked); computed once
        self._decisions: dict[str, _Options | None] = {}
        self.probe_started = False

    def __repr__(self) -> str:
        return f"<CeleryIntegration auto_track={self.auto_track}>"

    @staticmethod
    def setup_once() -> None:
        _connect()

    # -- which tasks, with what ---------------------------------------------------------------------
    def options_for(self, name: str, task: Any = None) -> _Options | None:
        """The options a task is tracked with, or None if it is not tracked."""
        try:
            return self._decisions[name]
        except KeyError:
            pass
        if task is None:
            task = _registered_task(name)
        decision = self._decide(name, task)
        self._decisions[name] = decision
        return decision

    def _decide(self, name: str, task: Any) -> _Options | None:
        own = getattr(task, "taskreport", None) if task is not None else None
        if own is False:
            return None
        if own is None or own is True:
            if own is None and not self._auto(name):
                return None
            return _Options(self, name, {})
        if not isinstance(own, Mapping):
            _log.log(logging.ERROR, f"celery-options:{name}",
                     "taskreport: task %s: taskreport= must be True, False or a dict of task fields, not %r; "
                     "tracking it with the defaults", name, own)
            return _Options(self, name, {})
        return _Options(self, name, own)

    def _auto(self, name: str) -> bool:
        if not self.auto_track:
            return False
        if self.includes and not any(p.fullmatch(name) for p in self.includes):
            return False
        return not any(p.fullmatch(name) for p in self.excludes)

    def recorded_args(self, name: str, options: _Options, args: Any, kwargs: Any) -> dict[str, Any]:
        """``{"args": ..., "kwargs": ...}`` for the task's data, bounded and redacted; {} when off."""
        if not options.record_args:
            return {}
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.redact_args is not None:
            try:
                redacted = self.redact_args(name, args, kwargs)
            except Exception as exc:
                _log.log(logging.ERROR, f"celery-redact:{name}",
                         "taskreport: redact_args raised %s: %s; no arguments recorded for %s",
                         type(exc).__name__, exc, name)
                return {}
            if redacted is None:
                return {}
            args, kwargs = tuple(redacted[0]), dict(redacted[1])
        return _bounded({"args": list(args), "kwargs": kwargs}, self.max_args_size)


class _Options:
    """How one Celery task is tracked: the integration's options with the task's own on top."""

    __slots__ = ("fields", "heartbeat", "record_args")

    def __init__(self, integration: CeleryIntegration, name: str, own: Mapping[str, Any]) -> None:
        own = dict(own)
        heartbeat = own.pop("heartbeat", integration.heartbeat)
        record_args = own.pop("record_args", integration.record_args)
        fields = {k: v for k, v in own.items() if k in TASK_FIELDS}
        try:
            self.heartbeat = _seconds(heartbeat, "heartbeat")
            for key in own:
                if key not in TASK_FIELDS:
                    raise ValidationError(f"is not a task field this integration sets (one of "
                                          f"{', '.join((*TASK_FIELDS, 'heartbeat', 'record_args'))}).", attr=key)
            fields = validate_task({"name": name, **fields}, partial=False)
        except ValidationError as exc:
            _log.log(logging.ERROR, f"celery-options:{name}",
                     "taskreport: task %s: ignoring its taskreport options: %s", name, exc)
            self.heartbeat, fields = integration.heartbeat, {"name": name}
        self.record_args = bool(record_args)
        if self.heartbeat is not None and "stale_timeout" not in fields:
            fields["stale_timeout"] = max(1, round(self.heartbeat * 2))
        self.fields = fields


def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    """``value`` as JSON values, or each part cut to text when the whole is over ``limit`` characters."""
    out: dict[str, Any] = {}
    texts = {}
    for key, part in value.items():
        try:
            texts[key] = json.dumps(part, default=repr, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            texts[key] = json.dumps(repr(part), ensure_ascii=False)
    if sum(len(t) for t in texts.values()) <= limit:
        for key, text in texts.items():
            out[key] = json.loads(text)
        return out
    share = max(8, limit // max(1, len(texts)))
    for key, text in texts.items():
        out[key] = text if len(text) <= share else text[: share - 1] + "…"
    return out


class TrackedTask(celery.Task):  # type: ignore[misc, name-defined]
    """A Celery task base that opts in to tracking: ``@app.task(base=TrackedTask)``. Subclass it and set
    ``taskreport = {...}`` for per-task fields (``tags``, ``max_runtime``, ``heartbeat``, ...)."""

    abstract = True
    taskreport: bool | Mapping[str, Any] = True


# -- state of this process ---------------------------------------------------------------------------------
class _Run:
    """One Celery task being run by this process (a pool child, or the caller in eager mode)."""

    __slots__ = ("__weakref__", "beats", "celery_id", "ended", "handle", "header", "parent", "scope", "started")

    def __init__(self, celery_id: str, handle: Task, parent: Task | None, header: dict[str, Any],
                 started: float) -> None:
        self.celery_id = celery_id
        self.handle = handle
        #: the record's parent (None: none): tasks the run publishes as a canvas's continuation get it too
        self.parent = parent
        self.header = header
        self.started = started
        self.ended = False
        self.scope: Any = None
        #: the record has a heartbeat to stop at the end
        self.beats = False


#: the Celery task this context runs (a pool child's task, or an eager task)
_run_var: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("taskreport_celery_run", default=None)
#: eager tasks whose next attempt is about to run in this process
_retrying: dict[str, _Run] = {}
#: the worker main process: what it received, by id, while Celery holds the request
_received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
#: the schedule entry beat is sending now
_beat_entry: contextvars.ContextVar[str | None] = contextvars.ContextVar("taskreport_beat_entry", default=None)
#: hook and exception kind -> [when last logged, repeats since]
_failures: dict[str, list[Any]] = {}
_failures_lock = threading.Lock()


def _this_run(task_id: Any) -> _Run | None:
    """The run of ``task_id`` in this context: Celery signals a task's end in the thread that ran it (in the
    threads pool, two attempts of one task may run at once in two threads)."""
    run = _run_var.get()
    return run if run is not None and run.celery_id == task_id else None


def _integration() -> CeleryIntegration | None:
    from .._client import current_client

    client = current_client()
    if client is None:
        return None
    return client.integration(CeleryIntegration)


def _reporting_off() -> bool:
    """Reporting is switched off in a process whose client was made with this integration."""
    from .._client import current_client

    client = current_client()
    return client is not None and client.disabled and CeleryIntegration.identifier in client.integrations


def _env_parent() -> Task | None:
    from .._client import current_client

    client = current_client()
    return None if client is None else client.env_parent()


def _refs_known() -> bool | None:
    """Whether the service knows task references: True, False, or None while unknown."""
    from .._client import current_client

    client = current_client()
    return None if client is None else client.transport.refs


def _failed(hook: str, exc: BaseException) -> None:
    """An exception inside a hook: reported once per hook and kind (with its traceback), then counted and
    summed up at most once an hour; never raised into Celery or the task."""
    key = f"{hook}:{type(exc).__name__}"
    now = time.monotonic()
    with _failures_lock:
        seen = _failures.get(key)
        if seen is None:
            _failures[key] = [now, 0]
        else:
            seen[1] += 1
            if now - seen[0] < 3600:
                return
            repeats, seen[0], seen[1] = seen[1], now, 0
    if seen is None:
        _internal.report(f"the Celery integration failed in {hook}; the task goes on untracked there", exc)
    else:
        logger.error("taskreport: the Celery integration failed in %s %d more time(s) within the hour: %s",
                     hook, repeats, exc)


def _guarded(hook: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        def handler(*args: Any, **kwargs: Any) -> None:
            try:
                func(*args, **kwargs)
            except Exception as exc:
                _failed(hook, exc)

        handler.__name__ = handler.__qualname__ = f"taskreport_{hook}"
        return handler

    return decorate


def _registered_task(name: str) -> Any:
    try:
        from celery import current_app

        return current_app.tasks.get(name)
    except Exception:
        return None


def _probe(integration: CeleryIntegration) -> threading.Thread | None:
    """Learn, in the background and once per client, whether the service knows task references (its answer
    to a request for one page of one task says so). Until it is known, the records of published tasks are
    made by the workers."""
    if integration.probe_started:
        return None
    integration.probe_started = True
    from .._client import current_client

    client = current_client()
    if client is None or client.transport.refs is not None:
        return None

    def ask() -> None:
        with contextlib.suppress(Exception):  # a service that can't answer stays unknown
            client.list_tasks(page_size=1).page()

    thread = threading.Thread(target=ask, name="taskreport-celery-probe", daemon=True)
    thread.start()
    return thread


# -- the parent of a task published (or run eagerly) here -------------------------------------------------
_CELERY_DIR = os.path.dirname(str(celery.__file__))


#: what Celery's tracer calls after the task's body to send a chain's next step, links, a chord's callback
#: (``mark_as_done``) and error callbacks (``on_error``)
_CONTINUING = frozenset({"_dispatch_callbacks_and_chain", "mark_as_done", "on_error", "handle_error_state",
                         # Celery before 5.6 sends links and a chain's next step from the tracer itself
                         "apply_async", "delay"})


def _continuation(skip: int) -> bool:
    """Whether Celery's own code (a chain's next step, a link, a chord's callback) is publishing, rather than
    the body of the running task: the tracer then called one of its continuations, not the body.
    ``skip``: tracer frames to pass first (an eager task's own)."""
    frame: Any = sys._getframe(1)
    callee: Any = None
    while frame is not None:
        code = frame.f_code
        if code.co_name == "trace_task" and code.co_filename.startswith(_CELERY_DIR):
            if skip:
                skip -= 1
            else:
                return callee is not None and callee.f_code.co_name in _CONTINUING
        callee = frame
        frame = frame.f_back
    return False


def _parent_here(skip: int = 0) -> tuple[bool, Task | None]:
    """(decided, parent) for a task published now: inside a tracked Celery task, its record (or, for
    canvas continuations and for tasks of a task that has a parent, that parent: tasks nest one level)."""
    run = _run_var.get()
    if run is None:
        return False, None
    now = current_task()
    if now is not None and now is not run.handle and now.parent is not run.handle:
        return True, now  # a task() block of the user's own, outside the run's record: the core decides
    if _continuation(skip):
        return True, run.parent
    return True, run.parent if run.parent is not None else run.handle


def _header_of(request: Any) -> dict[str, Any]:
    """The ``taskreport`` header of a task's request (a Context in the task, a Request in the main process)."""
    if request is None:
        return {}
    getter = getattr(request, "get", None)
    header = getter(HEADER) if callable(getter) else None
    if not isinstance(header, dict):
        headers = getattr(request, "request_dict", None) or getattr(request, "headers", None)
        header = headers.get(HEADER) if isinstance(headers, dict) else None
    return header if isinstance(header, dict) else {}


def _retries_of(request: Any) -> int:
    retries = getattr(request, "retries", None)
    if retries is None:
        info = getattr(request, "request_dict", None)
        retries = info.get("retries") if isinstance(info, dict) else 0
    return retries if isinstance(retries, int) else 0


def _attach_parent(header: Mapping[str, Any]) -> Task | None:
    ref = header.get("parent")
    if not isinstance(ref, str):
        return None
    parent_id = header.get("parent_id")
    return Task.attach(ref, id=parent_id if isinstance(parent_id, str) else None)


def _queue_of(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    queue = info.get("routing_key") or info.get("queue")
    return str(queue)[:255] if queue else None


# -- publish ----------------------------------------------------------------------------------------------
@_guarded("before_task_publish")
def _before_publish(sender: Any = None, body: Any = None, exchange: Any = None, routing_key: Any = None,
                    headers: Any = None, declare: Any = None, **_: Any) -> None:
    integration = _integration()
    if integration is None or not isinstance(headers, dict):
        return
    celery_id = headers.get("id")
    name = headers.get("task") or sender
    if not isinstance(celery_id, str) or not isinstance(name, str):
        return  # protocol 1 messages carry neither here
    run = _run_var.get()
    if run is not None and run.celery_id == celery_id:
        _publish_retry(integration, run, headers)
        return
    options = integration.options_for(name)
    if options is None:
        return
    header: dict[str, Any] = {"sent": time.time()}
    decided, parent = _parent_here()
    if not decided:
        parent = current_task() or _env_parent()
    refs = _refs_known()
    if parent is not None:
        header["parent"] = parent.ref
        parent_id = parent.id
        if parent_id is None and refs is not True:
            # without references the worker can name the parent by its id only (once per parent)
            parent_id = parent.wait_id(integration.stock_id_timeout)
        if parent_id is not None:
            header["parent_id"] = parent_id
    beat = _beat_entry.get()
    if beat is not None:
        header["beat"] = beat
    if refs is None:
        _probe(integration)
    if refs is True:
        args, kwargs = _body_args(body)
        data = _base_data(integration, options, name, args, kwargs, header, 0)
        fields: dict[str, Any] = {**options.fields, "status": "pending", "external_id": celery_id[:255]}
        queue = _publish_queue(routing_key, declare)
        if queue:
            fields["queue"] = queue
        if data:
            fields["data"] = data
        fields.pop("name", None)
        Task.create(options.fields.get("name", name), ref=ref_for(celery_id), parent=parent, **fields)
        header["made"] = header["refs"] = True
    headers[HEADER] = header


def _publish_queue(routing_key: Any, declare: Any) -> str | None:
    for queue in declare or ():
        qname = getattr(queue, "name", None)
        if qname:
            return str(qname)[:255]
    return str(routing_key)[:255] if routing_key else None


def _body_args(body: Any) -> tuple[Any, Any]:
    if isinstance(body, (tuple, list)) and len(body) >= 2:
        return body[0], body[1]
    if isinstance(body, dict):
        return body.get("args"), body.get("kwargs")
    return (), {}


def _base_data(integration: CeleryIntegration, options: _Options, name: str, args: Any, kwargs: Any,
               header: Mapping[str, Any], retries: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    own = options.fields.get("data")
    if isinstance(own, Mapping):
        data.update(own)
    data.update(integration.recorded_args(name, options, args, kwargs))
    if header.get("beat"):
        data["beat_entry"] = header["beat"]
    if retries:
        data["retries"] = retries
        last = header.get("last")
        if isinstance(last, Mapping):
            data.update({k: v for k, v in last.items() if k in ("exception", "message", "traceback")})
    return data


def _publish_retry(integration: CeleryIntegration, run: _Run, headers: dict[str, Any]) -> None:
    """The running task publishes its own retry: the record goes back to pending, with the count and the
    last exception, and the next attempt continues it (the header says so)."""
    retries = headers.get("retries") or 0
    header = {**run.header, "made": True, "started": run.started}
    header.pop("id", None)
    exc = sys.exc_info()[1]
    data: dict[str, Any] = {"retries": retries}
    header.pop("last", None)
    if exc is not None:
        last = exception_data(exc)
        data.update(last)
        header["last"] = last  # the next attempt keeps it in the data it sends
    run.handle.update(status="pending", data=data)
    run.ended = True  # this attempt's outcome is the retry, whatever Celery signals next
    task_id = run.handle.id
    if task_id is None and _refs_known() is not True:
        # a service without references finds the task by id only: the next attempt must know it
        task_id = run.handle.wait_id(integration.stock_id_timeout)
    if task_id is not None:
        header["id"] = task_id
    if _refs_known() is True:
        header["refs"] = True
    headers[HEADER] = header
    # the next attempt may start at once in another process: this state must land before its start
    from .._client import current_client

    client = current_client()
    if client is not None:
        client.flush(integration.stock_id_timeout)


# -- the worker: a pool child runs the task ----------------------------------------------------------------
@_guarded("task_prerun")
def _prerun(sender: Any = None, task_id: Any = None, task: Any = None, args: Any = None, kwargs: Any = None,
            **_: Any) -> None:
    integration = _integration()
    if task is None or not isinstance(task_id, str):
        return
    if integration is None:
        if _reporting_off():
            # code that reports on current_task() keeps working, on a task that does nothing
            _start(_Run(task_id, DisabledTask(task.name), None, {}, time.time()))
        return
    request = task.request
    earlier = _retrying.pop(task_id, None)
    if earlier is not None:
        # an eager retry, in the process that ran the attempt before: the same handle goes on
        data = {"retries": getattr(request, "retries", 0) or 0}
        earlier.handle.update(status="processing", data=data)
        run = _Run(task_id, earlier.handle, earlier.parent, earlier.header, earlier.started)
        _start(run)
        return
    header = _header_of(request)
    name = task.name
    options = integration.options_for(name, task)
    if options is None:
        if not header:
            return
        options = _Options(integration, name, {})  # the publisher tracked it: its record must end
    retries = getattr(request, "retries", 0) or 0
    now = time.time()
    eager = bool(getattr(request, "is_eager", False))
    if header:
        decided, parent = True, _attach_parent(header)
    elif eager:
        decided, parent = _parent_here(skip=1)
    else:
        decided, parent = False, None
    first_start = header.get("started")
    started = float(first_start) if retries and isinstance(first_start, (int, float)) else now
    data = _base_data(integration, options, name, args, kwargs, header, retries)
    fields: dict[str, Any] = {"status": "processing", "external_id": task_id[:255], "start_time": started}
    queue = _queue_of(request)
    if queue:
        fields["queue"] = queue
    sent = header.get("sent")
    if not retries and isinstance(sent, (int, float)):
        fields["time_to_start"] = max(0.0, now - sent)
    ref = ref_for(task_id)
    title = options.fields.get("name", name)
    known_id = header.get("id") if isinstance(header.get("id"), str) else None
    made = bool(header.get("made"))
    if made and not (header.get("refs") or known_id or _refs_known() is True):
        # a service without references finds a record by id only, and this one's is not known here
        _log.log(logging.WARNING, "celery-lost-id",
                 "taskreport: Celery task %s (%s) goes on in a new record: the service has no task references "
                 "and the id of the record its earlier attempt made did not reach this attempt", name, task_id)
        made = False
    if made:
        handle = Task.attach(ref, name=title, id=known_id)
        placeholder = {k: v for k, v in options.fields.items() if k not in ("data", "name")}
        handle.update(**{**placeholder, **fields, **({"data": data} if data else {})})
    else:
        create = {k: v for k, v in options.fields.items() if k != "name"}
        create.update(fields)
        if data:
            create["data"] = data
        if decided:
            create["parent"] = parent
        handle = Task.create(title, ref=ref, **create)
    run = _Run(task_id, handle, parent, header, started)
    if options.heartbeat is not None:
        handle.heartbeat(options.heartbeat)
        run.beats = True
    _start(run)


def _start(run: _Run) -> None:
    run.scope = (_run_var.set(run), use_task(run.handle))
    run.scope[1].__enter__()


@_guarded("task_postrun")
def _postrun(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    run = _this_run(task_id)
    if run is None:
        return
    token, scope = run.scope
    try:
        scope.__exit__(None, None, None)
    finally:
        with contextlib.suppress(ValueError):
            _run_var.reset(token)
    if run.beats:
        run.handle.heartbeat(None)


@_guarded("task_success")
def _success(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    run = _this_run(getattr(request, "id", None))
    if run is None or run.ended:
        return
    run.ended = True
    run.handle.success()


@_guarded("task_retry")
def _retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    run = _this_run(getattr(request, "id", None))
    if run is None or run.ended:
        return  # the retry's publication said it all (or an eager retry already ran to its end)
    run.ended = True
    if getattr(request, "is_eager", False):
        _retrying[run.celery_id] = run  # apply() runs the next attempt right after this one, here
    exc = getattr(reason, "exc", None)
    data: dict[str, Any] = {"retries": (getattr(request, "retries", 0) or 0) + 1}
    if isinstance(exc, BaseException):
        data.update(exception_data(exc))
    run.handle.update(status="pending", data=data)


@_guarded("task_failure")
def _failure(sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any) -> None:
    if not isinstance(task_id, str):
        return
    run = _this_run(task_id)
    if run is not None:
        if run.ended:
            return
        run.ended = True
        request = getattr(sender, "request", None)
        data = _failure_data(sender, request, exception)
        run.handle.error(exception if isinstance(exception, BaseException) else None, data=data)
        return
    # not run here: the worker's main process reports a hard time limit or a lost pool child
    integration = _integration()
    if integration is None:
        return
    context = _received.get(task_id)
    if context is None:
        context = getattr(sender, "request", None)  # a lost child's request is pushed for the signal
        if getattr(context, "id", None) != task_id:
            context = None
    header = _header_of(context)
    options = integration.options_for(sender.name, sender) if sender is not None else None
    if options is None and not header:
        return
    data = _failure_data(sender, context, exception)
    handle = _main_target(integration, task_id, sender, context, header, started=True)
    if handle is not None:
        handle.error(exception if isinstance(exception, BaseException) else None, data=data)


def _failure_data(task: Any, request: Any, exception: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    retries = _retries_of(request)
    if retries:
        data["retries"] = retries
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

    if isinstance(exception, SoftTimeLimitExceeded):
        limit = _limit(task, request, soft=True)
        data["why"] = f"soft time limit exceeded{f' ({limit:g} s)' if limit else ''}"
    elif isinstance(exception, TimeLimitExceeded):
        limit = exception.args[0] if exception.args else _limit(task, request, soft=False)
        data["why"] = f"hard time limit exceeded{f' ({limit:g} s)' if isinstance(limit, (int, float)) else ''}"
    elif isinstance(exception, WorkerLostError):
        data["why"] = f"the worker process running it was lost: {exception}"
    else:
        max_retries = getattr(task, "max_retries", None)
        if retries and max_retries is not None and retries >= max_retries:
            data["why"] = f"retries exhausted ({retries} of {max_retries})"
    return data


def _limit(task: Any, request: Any, *, soft: bool) -> float | None:
    limits = getattr(request, "timelimit", None) or getattr(request, "time_limits", None) or (None, None)
    value = limits[1] if soft else limits[0]
    if value is None:
        value = getattr(task, "soft_time_limit" if soft else "time_limit", None)
    return float(value) if isinstance(value, (int, float)) else None


# -- the worker's main process ---------------------------------------------------------------------------
@_guarded("task_received")
def _on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    if request is None or _integration() is None:
        return
    task_id = getattr(request, "id", None)
    if isinstance(task_id, str):
        _received[task_id] = request


@_guarded("task_revoked")
def _revoked(sender: Any = None, request: Any = None, terminated: Any = False, signum: Any = None,
             expired: Any = False, **_: Any) -> None:
    integration = _integration()
    task_id = getattr(request, "id", None)
    if integration is None or sender is None or not isinstance(task_id, str):
        return
    header = _header_of(request)
    if integration.options_for(sender.name, sender) is None and not header:
        return
    if expired:
        why = "expired before it started"
    elif terminated:
        why = f"revoked and terminated while running ({_signal_name(signum)})"
    else:
        why = "revoked before it started"
    handle = _main_target(integration, task_id, sender, request, header, started=bool(terminated),
                          status="cancelled", why=why)
    if handle is not None:
        handle.cancel(data={"why": why})


def _signal_name(signum: Any) -> str:
    import signal as _signal

    if isinstance(signum, int):
        with contextlib.suppress(ValueError):
            return _signal.Signals(signum).name
    return str(signum or "SIGTERM")


def _main_target(integration: CeleryIntegration, task_id: str, task: Any, request: Any,
                 header: Mapping[str, Any], *, started: bool, status: str | None = None,
                 why: str | None = None) -> Task | None:
    """The record of a task whose end the worker's main process saw. It exists if the publisher made it or
    an attempt ran; then it is found by reference (or, on a service without references, by the id a retry
    carried). A task that never started is created here, already ended."""
    ref = ref_for(task_id)
    retries = _retries_of(request)
    name = task.name
    options = integration.options_for(name, task) or _Options(integration, name, {})
    data = _base_data(integration, options, name, getattr(request, "args", None),
                      getattr(request, "kwargs", None), header, retries)
    made = bool(header.get("made")) or retries > 0 or started
    if made:
        task_ref = header.get("id")
        if not (header.get("refs") or isinstance(task_ref, str) or _refs_known() is True):
            # a service without references can't find a record a pool child made: it is left to the
            # heartbeat, which stops, so the service marks it stale
            _log.log(logging.WARNING, "celery-main",
                     "taskreport: the end of Celery task %s (%s) can't be reported: the service has no task "
                     "references and the worker process that made its record is gone", name, task_id)
            return None
        handle = Task.attach(ref, name=name, id=task_ref if isinstance(task_ref, str) else None)
        # the end's data replaces the record's: what the task itself put there is not known here
        handle.update(data=data)
        return handle
    fields: dict[str, Any] = {k: v for k, v in options.fields.items() if k != "name"}
    fields["external_id"] = task_id[:255]
    queue = _queue_of(request)
    if queue:
        fields["queue"] = queue
    if why:
        data["why"] = why
    if data:
        fields["data"] = data
    fields["status"] = status or "error"
    Task.create(options.fields.get("name", name), ref=ref, parent=_attach_parent(header), **fields)
    return None


@_guarded("worker_init")
def _worker_init(sender: Any = None, **_: Any) -> None:
    """Before the pool children are made: learn whether the service knows references, so they inherit it."""
    integration = _integration()
    if integration is None or _refs_known() is not None:
        return
    thread = _probe(integration)
    if thread is not None:
        thread.join(3.0)


# -- beat ---------------------------------------------------------------------------------------------------
def _wrap_beat(beat: Any) -> None:
    import wrapt

    def apply_entry(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        entry = args[0] if args else kwargs.get("entry")
        token = _beat_entry.set(str(getattr(entry, "name", "") or "") or None)
        try:
            return wrapped(*args, **kwargs)
        finally:
            _beat_entry.reset(token)

    wrapt.wrap_function_wrapper(beat.Scheduler, "apply_entry", apply_entry)


_connected = False


def _connect() -> None:
    """Connect the signal handlers (strongly: they are module functions) and wrap beat, once."""
    global _connected
    if _connected:
        return
    for signal, handler in (
        (signals.before_task_publish, _before_publish),
        (signals.task_prerun, _prerun),
        (signals.task_postrun, _postrun),
        (signals.task_success, _success),
        (signals.task_retry, _retry),
        (signals.task_failure, _failure),
        (signals.task_revoked, _revoked),
        (signals.task_received, _on_received),
        (signals.worker_init, _worker_init),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"taskreport.{handler.__name__}")
    import wrapt

    wrapt.register_post_import_hook(_wrap_beat, "celery.beat")  # beat's module is imported by beat only
    _connected = True


def _forget_runs_after_fork() -> None:
    _received.clear()
    _retrying.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runs_after_fork)

