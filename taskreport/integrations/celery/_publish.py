"""Publishing: the record made (or announced) when a task is sent, retries, beat."""

from __future__ import annotations

import inspect
import os
import sys
import time
from typing import Any

import celery

from ..._context import current_task
from ..._task import Task, exception_data
from ._options import HEADER, CeleryIntegration, ref_for
from ._state import (
    _base_data,
    _beat_entry,
    _env_parent,
    _guarded,
    _integration,
    _probe,
    _refs_known,
    _Run,
    _run_var,
)

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
    here = inspect.currentframe()
    frame: Any = here.f_back if here is not None else None
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
    from ..._client import current_client

    client = current_client()
    if client is not None:
        client.flush(integration.stock_id_timeout)

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
