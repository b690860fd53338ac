"""The worker's main process: revocations, expiries, hard time limits and lost children."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from ..._task import Task
from ._options import CeleryIntegration, _log, _Options, ref_for
from ._state import (
    _attach_parent,
    _base_data,
    _guarded,
    _header_of,
    _integration,
    _probe,
    _queue_of,
    _received,
    _refs_known,
    _retries_of,
)


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
