"""What this process knows of the Celery tasks it runs, and the helpers every hook shares."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ... import _internal
from ..._task import Task
from ._options import HEADER, CeleryIntegration, _Options, logger


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
    from ..._client import current_client

    client = current_client()
    if client is None:
        return None
    return client.integration(CeleryIntegration)

def _reporting_off() -> bool:
    """Reporting is switched off in a process whose client was made with this integration."""
    from ..._client import current_client

    client = current_client()
    return client is not None and client.disabled and CeleryIntegration.identifier in client.integrations

def _env_parent() -> Task | None:
    from ..._client import current_client

    client = current_client()
    return None if client is None else client.env_parent()

def _refs_known() -> bool | None:
    """Whether the service knows task references: True, False, or None while unknown."""
    from ..._client import current_client

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

def _probe(integration: CeleryIntegration) -> threading.Thread | None:
    """Learn, in the background and once per client, whether the service knows task references (its answer
    to a request for one page of one task says so). Until it is known, the records of published tasks are
    made by the workers."""
    if integration.probe_started:
        return None
    integration.probe_started = True
    from ..._client import current_client

    client = current_client()
    if client is None or client.transport.refs is not None:
        return None

    def ask() -> None:
        with contextlib.suppress(Exception):  # a service that can't answer stays unknown
            client.list_tasks(page_size=1).page()

    thread = threading.Thread(target=ask, name="taskreport-celery-probe", daemon=True)
    thread.start()
    return thread

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
