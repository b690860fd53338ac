"""The pool child that runs a task: its record while it runs, and its end."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from ..._context import use_task
from ..._task import DisabledTask, Task, exception_data
from ._main import _main_target
from ._options import _log, _Options, ref_for
from ._publish import _parent_here
from ._state import (
    _attach_parent,
    _base_data,
    _guarded,
    _header_of,
    _integration,
    _queue_of,
    _received,
    _refs_known,
    _reporting_off,
    _retries_of,
    _retrying,
    _Run,
    _run_var,
    _this_run,
)


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
